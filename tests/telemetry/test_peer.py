"""Istio's metadata exchange: the protobuf ``Struct`` codec and the header cache.

The codec is checked against wire bytes written by hand from the protobuf
encoding spec (https://protobuf.dev/programming-guides/encoding/), not only
against itself: ``google.protobuf.Struct`` is ``map<string, Value> fields = 1``
(each entry a message with ``key = 1`` and ``value = 2``), and ``Value`` is a
oneof of ``null_value = 1`` (enum), ``number_value = 2`` (double),
``string_value = 3``, ``bool_value = 4``, ``struct_value = 5`` and
``list_value = 6`` (``ListValue { repeated Value values = 1; }``).
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmesh.model import Workload
from inmesh.telemetry.peer import (
    MAX_HEADER_BYTES,
    PeerMetadata,
    PeerMetadataCache,
    decode_struct,
    encode_struct,
    local_metadata,
    node_id,
)

# -- hand-built wire bytes ------------------------------------------------------


def tag(number: int, wire: int) -> bytes:
    assert number < 16  # one-byte tags are all these tests need
    return bytes([number << 3 | wire])


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with a one-byte length."""
    assert len(payload) < 128
    return tag(number, 2) + bytes([len(payload)]) + payload


def entry(key: str, value: bytes) -> bytes:
    """One ``Struct.fields`` map entry (field 1 of the Struct)."""
    return ld(1, ld(1, key.encode()) + ld(2, value))


def test_one_string_field_byte_by_byte() -> None:
    # Struct { fields { key: "a" value { string_value: "b" } } }
    data = bytes(
        [
            0x0A, 0x08,  # Struct.fields (1, LEN), 8 bytes of map entry
            0x0A, 0x01, 0x61,  # entry.key (1, LEN) "a"
            0x12, 0x03,  # entry.value (2, LEN), 3 bytes of Value
            0x1A, 0x01, 0x62,  # Value.string_value (3, LEN) "b"
        ]
    )  # fmt: skip
    assert decode_struct(data) == {"a": "b"}
    assert encode_struct({"a": "b"}) == data


def test_every_value_kind_from_hand_built_bytes() -> None:
    number = tag(2, 1) + struct.pack("<d", 1.5)  # fixed64 little-endian double
    assert number == b"\x11\x00\x00\x00\x00\x00\x00\xf8\x3f"
    true = tag(4, 0) + b"\x01"
    null = tag(1, 0) + b"\x00"
    text = ld(3, b"hi")
    inner = ld(5, entry("k", ld(3, b"v")))
    items = ld(6, ld(1, text) + ld(1, true) + ld(1, null))
    data = (
        entry("b", true)
        + entry("l", items)
        + entry("n", number)
        + entry("s", text)
        + entry("t", inner)
        + entry("z", null)
    )
    expected = {
        "b": True,
        "l": ["hi", True, None],
        "n": 1.5,
        "s": "hi",
        "t": {"k": "v"},
        "z": None,
    }
    assert decode_struct(data) == expected
    assert encode_struct(expected) == data  # the encoder writes the same bytes


def test_bool_false_and_empty_values() -> None:
    data = entry("f", tag(4, 0) + b"\x00") + entry("e", ld(3, b"")) + entry("x", b"")
    # an empty Value has no kind set: read as null, as protobuf's JSON mapping does
    assert decode_struct(data) == {"f": False, "e": "", "x": None}


def test_unknown_fields_and_mismatched_wire_types_are_skipped() -> None:
    """As protobuf parsers do: a field of an unexpected number or wire type is unknown."""
    unknown_varint = tag(7, 0) + b"\x96\x01"  # field 7, varint 150
    unknown_fixed32 = tag(9, 5) + b"\x01\x02\x03\x04"
    fields_as_varint = tag(1, 0) + b"\x05"  # Struct.fields with the wrong wire type
    data = unknown_varint + entry("a", ld(3, b"b")) + unknown_fixed32 + fields_as_varint
    assert decode_struct(data) == {"a": "b"}
    # a Value whose string_value has the varint wire type has no kind we know
    assert decode_struct(entry("a", tag(3, 0) + b"\x01")) == {"a": None}


def test_multi_byte_lengths_and_varints() -> None:
    long_value = "x" * 300  # a two-byte length varint (0xAC 0x02)
    data = encode_struct({"k": long_value})
    assert b"\xac\x02" in data
    assert decode_struct(data) == {"k": long_value}


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "",
        "ünïcødé ✓",
        True,
        False,
        0.0,
        -2.5,
        1e300,
        None,
        [],
        ["a", 1.0, None, True, {"x": "y"}, ["nested"]],
        {},
        {"inner": {"deeper": "v", "n": 3.0}},
    ],
)
def test_round_trip(value: object) -> None:
    fields = {"key": value, "other": "o"}
    assert decode_struct(encode_struct(fields)) == fields


def test_ints_travel_as_doubles() -> None:
    assert decode_struct(encode_struct({"n": 3})) == {"n": 3.0}
    assert isinstance(decode_struct(encode_struct({"n": 3}))["n"], float)


def test_encoding_is_deterministic_with_sorted_keys() -> None:
    one = encode_struct({"b": "2", "a": "1", "c": {"y": "1", "x": "2"}})
    two = encode_struct({"c": {"x": "2", "y": "1"}, "a": "1", "b": "2"})
    assert one == two
    assert one.index(b"\x0a\x01a") < one.index(b"\x0a\x01b") < one.index(b"\x0a\x01c")
    inner = one[one.index(b"\x0a\x01c") :]
    assert inner.index(b"\x0a\x01x") < inner.index(b"\x0a\x01y")


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        encode_struct({"k": object()})


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_round_trip_property(fields: dict[str, object]) -> None:
    assert decode_struct(encode_struct(fields)) == fields


# -- PeerMetadata -----------------------------------------------------------------

FRONTEND_STRUCT = {
    "NAME": "frontend-7d4b9c-xk2p",
    "NAMESPACE": "shop",
    "WORKLOAD_NAME": "frontend",
    "CLUSTER_ID": "Kubernetes",
    "OWNER": "kubernetes://apis/apps/v1/namespaces/shop/deployments/frontend",
    "LABELS": {
        "app": "frontend",
        "version": "v2",
        "service.istio.io/canonical-name": "frontend",
        "service.istio.io/canonical-revision": "v2",
        "team": "web",
    },
}


def test_from_struct_reads_istio_keys() -> None:
    meta = PeerMetadata.from_struct(FRONTEND_STRUCT)
    assert meta.name == "frontend-7d4b9c-xk2p"
    assert meta.namespace == "shop"
    assert meta.workload == "frontend"
    assert meta.cluster_id == "Kubernetes"
    assert meta.app == "frontend"
    assert meta.version == "v2"
    assert meta.canonical_service == "frontend"
    assert meta.canonical_revision == "v2"
    assert meta.labels["team"] == "web"


def test_to_struct_writes_istio_keys() -> None:
    meta = PeerMetadata.from_struct(FRONTEND_STRUCT)
    assert meta.to_struct() == FRONTEND_STRUCT
    assert PeerMetadata.from_struct(decode_struct(encode_struct(meta.to_struct()))).to_struct() == (
        FRONTEND_STRUCT
    )


def test_from_struct_ignores_wrong_types_and_extra_keys() -> None:
    meta = PeerMetadata.from_struct(
        {
            "NAME": 3.0,
            "NAMESPACE": ["shop"],
            "WORKLOAD_NAME": None,
            "LABELS": {"app": "a", "version": True, "nested": {"x": "y"}},
            "PLATFORM_METADATA": {"gcp_project": "p"},
            "ISTIO_VERSION": "1.24.0",
        }
    )
    assert (meta.name, meta.namespace, meta.workload) == ("", "", "")
    assert meta.app == "a"
    assert meta.version == ""
    assert dict(meta.labels) == {"app": "a"}
    assert PeerMetadata.from_struct({"LABELS": "not a struct"}).labels == {}


def test_to_struct_without_namespace_has_no_owner() -> None:
    assert PeerMetadata(workload="w").to_struct() == {"WORKLOAD_NAME": "w", "LABELS": {}}


def test_header_value_is_base64_of_the_struct() -> None:
    meta = PeerMetadata.from_struct(FRONTEND_STRUCT)
    raw = base64.b64decode(meta.header_value(), validate=True)
    assert decode_struct(raw) == FRONTEND_STRUCT
    assert meta.header_value() == PeerMetadata.from_struct(FRONTEND_STRUCT).header_value()


def test_node_id_is_envoys_sidecar_id() -> None:
    meta = PeerMetadata(name="frontend-abc", namespace="shop")
    assert node_id(meta) == b"sidecar~127.0.0.1~frontend-abc.shop~shop.svc.cluster.local"
    assert node_id(meta, "10.1.2.3").startswith(b"sidecar~10.1.2.3~")


def test_local_metadata_from_a_workload() -> None:
    wl = Workload("backend", namespace="shop", labels={"app": "backend", "version": "v1"})
    meta = local_metadata(wl, "cluster-1", "backend-pod-1")
    assert meta.to_struct() == {
        "NAME": "backend-pod-1",
        "NAMESPACE": "shop",
        "WORKLOAD_NAME": "backend",
        "CLUSTER_ID": "cluster-1",
        "OWNER": "kubernetes://apis/apps/v1/namespaces/shop/deployments/backend",
        "LABELS": {
            "app": "backend",
            "version": "v1",
            "service.istio.io/canonical-name": "backend",
            "service.istio.io/canonical-revision": "v1",
        },
    }


def test_local_metadata_pod_name_defaults_to_workload_and_host() -> None:
    meta = local_metadata(Workload("backend"), "Kubernetes")
    assert meta.name.startswith("backend-")
    assert len(meta.name) > len("backend-")


@pytest.mark.parametrize(
    ("labels", "canonical"),
    [
        (
            {
                "service.istio.io/canonical-name": "canon",
                "app.kubernetes.io/name": "k8s-name",
                "app": "app",
            },
            "canon",
        ),
        ({"app.kubernetes.io/name": "k8s-name", "app": "app"}, "k8s-name"),
        ({"app": "app"}, "app"),
        ({}, "the-workload"),
        ({"service.istio.io/canonical-name": ""}, "the-workload"),
    ],
)
def test_canonical_name_fallbacks(labels: dict[str, str], canonical: str) -> None:
    meta = local_metadata(Workload("the-workload", labels=labels), "Kubernetes", "p")
    assert meta.canonical_service == canonical


@pytest.mark.parametrize(
    ("labels", "revision"),
    [
        (
            {
                "service.istio.io/canonical-revision": "r1",
                "app.kubernetes.io/version": "k1",
                "version": "v1",
            },
            "r1",
        ),
        ({"app.kubernetes.io/version": "k1", "version": "v1"}, "k1"),
        ({"version": "v1"}, "v1"),
        ({}, "latest"),
    ],
)
def test_canonical_revision_fallbacks(labels: dict[str, str], revision: str) -> None:
    meta = local_metadata(Workload("w", labels=labels), "Kubernetes", "p")
    assert meta.canonical_revision == revision


def test_app_and_version_fall_back_to_kubernetes_recommended_labels() -> None:
    wl = Workload(
        "w", labels={"app.kubernetes.io/name": "shop-ui", "app.kubernetes.io/version": "2.1"}
    )
    meta = local_metadata(wl, "Kubernetes", "p")
    assert (meta.app, meta.version) == ("shop-ui", "2.1")


# -- PeerMetadataCache --------------------------------------------------------------


def header_of(fields: Mapping[str, object]) -> bytes:
    return base64.b64encode(encode_struct(fields))


def test_cache_returns_one_object_per_value() -> None:
    cache = PeerMetadataCache()
    value = header_of(FRONTEND_STRUCT)
    first = cache.get(value)
    assert first is not None
    assert first.workload == "frontend"
    assert cache.get(bytes(value)) is first  # an equal value, another bytes object
    other = cache.get(header_of({"WORKLOAD_NAME": "other"}))
    assert other is not None
    assert other is not first
    assert other != first  # compared by identity


def test_cache_accepts_unpadded_base64() -> None:
    value = header_of({"WORKLOAD_NAME": "ab"}).rstrip(b"=")
    meta = PeerMetadataCache().get(value)
    assert meta is not None
    assert meta.workload == "ab"


def test_cache_is_bounded() -> None:
    cache = PeerMetadataCache(max_entries=2)
    values = [header_of({"WORKLOAD_NAME": f"w{i}"}) for i in range(3)]
    first = cache.get(values[0])
    assert cache.get(values[0]) is first
    cache.get(values[1])
    cache.get(values[2])  # full: cleared, then this one kept
    again = cache.get(values[0])
    assert again is not None
    assert again.workload == "w0"
    assert len(cache._cache) <= 2


def nest(depth: int) -> bytes:
    """A Struct nested ``depth`` levels deep through ``struct_value``."""
    data = entry("leaf", ld(3, b"v"))
    for _ in range(depth):
        data = entry("k", ld(5, data))
    return data


def nest_lists(depth: int) -> bytes:
    """``{"k": [[[...["v"]...]]]}`` nested ``depth`` lists deep."""
    value = ld(3, b"v")
    for _ in range(depth):
        value = ld(6, ld(1, value))
    return entry("k", value)


GARBAGE: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not base64", b"!!not*base64!!"),
    ("base64 with whitespace", b"Cgg KAWES\nAxoBYg=="),
    ("one char too many", b"A"),
    ("truncated varint", base64.b64encode(b"\x0a\x80")),
    ("runaway varint", base64.b64encode(b"\x08" + b"\xff" * 11 + b"\x01")),
    ("length past the end", base64.b64encode(b"\x0a\x10\x0a\x01a")),
    ("truncated fixed64", base64.b64encode(entry("n", b"\x11\x00\x00"))),
    ("truncated fixed32", base64.b64encode(b"\x0d\x01\x02")),
    ("start group wire type", base64.b64encode(b"\x0b\x0c")),
    ("end group wire type", base64.b64encode(b"\x0c")),
    ("wire type 6", base64.b64encode(b"\x0e")),
    ("wire type 7", base64.b64encode(b"\x0f")),
    ("field number 0", base64.b64encode(b"\x02\x00")),
    ("invalid UTF-8 key", base64.b64encode(entry("x", ld(3, b"v")).replace(b"x", b"\xff"))),
    ("invalid UTF-8 value", base64.b64encode(entry("k", ld(3, b"\xc3\x28")))),
    (
        "invalid UTF-8 in a label",
        base64.b64encode(entry("LABELS", ld(5, entry("app", ld(3, b"\xed\xa0\x80"))))),
    ),
    ("nested too deep", base64.b64encode(nest(6))),
    ("lists nested too deep", base64.b64encode(nest_lists(8))),
    ("oversized", base64.b64encode(encode_struct({"NAME": "x" * MAX_HEADER_BYTES}))),
]


@pytest.mark.parametrize(("why", "value"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_is_none_never_an_error(why: str, value: bytes) -> None:
    cache = PeerMetadataCache()
    assert cache.get(value) is None
    assert cache.get(value) is None  # and the answer is cached


def test_garbage_inputs_are_what_they_claim() -> None:
    """The deep/oversized cases above are malformed only for their stated reason."""
    assert decode_struct(nest(4)) == {"k": {"k": {"k": {"k": {"leaf": "v"}}}}}
    assert len(base64.b64encode(encode_struct({"NAME": "x" * MAX_HEADER_BYTES}))) > (
        MAX_HEADER_BYTES
    )
    shallow = PeerMetadataCache().get(base64.b64encode(nest(2)))
    assert shallow is not None
    assert PeerMetadataCache().get(base64.b64encode(nest_lists(2))) is not None
    near_limit = {"NAME": "x" * 5000}
    assert PeerMetadataCache().get(header_of(near_limit)) is not None


def test_a_valid_struct_without_istio_keys_is_empty_metadata() -> None:
    meta = PeerMetadataCache().get(header_of({"something": "else"}))
    assert meta is not None
    assert (meta.workload, meta.namespace, meta.app) == ("", "", "")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(raw: bytes) -> None:
    cache = PeerMetadataCache()
    cache.get(base64.b64encode(raw))
    cache.get(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=199))
def test_corrupted_valid_headers_never_raise(noise: bytes, at: int) -> None:
    raw = encode_struct(FRONTEND_STRUCT)
    at = at % len(raw)
    corrupted = raw[:at] + noise + raw[at + len(noise) :]
    meta = PeerMetadataCache().get(base64.b64encode(corrupted))
    assert meta is None or isinstance(meta, PeerMetadata)
    truncated = PeerMetadataCache().get(base64.b64encode(raw[:at]))
    assert truncated is None or isinstance(truncated, PeerMetadata)


def test_infinite_doubles_decode() -> None:
    decoded = decode_struct(entry("n", tag(2, 1) + struct.pack("<d", math.inf)))
    assert decoded == {"n": math.inf}
