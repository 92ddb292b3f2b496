"""Istio's metadata exchange between peers, sans I/O.

A client sidecar sends its workload's metadata upstream in two request
headers and the server sidecar answers with its own in the response (only
to a client that sent them), so each side can label its metrics with the
other's workload, app, version and canonical service (istio/proxy
``source/extensions/filters/http/peer_metadata/filter.cc``):

* ``x-envoy-peer-metadata-id``: the node id, ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``;
* ``x-envoy-peer-metadata``: base64 of a serialized ``google.protobuf.Struct``
  with ``NAME`` (pod), ``NAMESPACE``, ``WORKLOAD_NAME``, ``CLUSTER_ID``,
  ``OWNER`` and ``LABELS`` (``app``, ``version``,
  ``service.istio.io/canonical-name``/``-revision`` and the pod labels), as
  istio/proxy ``extensions/common/metadata_object.cc``
  ``convertWorkloadMetadataToStruct`` writes it.

The receiving side removes both headers, so the application never sees them.
inmesh speaks the same encoding, so an inmesh workload and an Envoy sidecar
label each other correctly too. The protobuf wire format is written and read
here directly (a ``Struct`` of strings and one nested ``Struct`` needs a few
dozen lines, not a protobuf runtime); anything malformed or oversized is
ignored and the peer stays ``unknown``.
"""

from __future__ import annotations

import base64
import binascii
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from inmesh.model import Workload

__all__ = [
    "METADATA_HEADER",
    "METADATA_ID_HEADER",
    "UNKNOWN",
    "PeerMetadata",
    "PeerMetadataCache",
    "decode_struct",
    "encode_struct",
    "local_metadata",
]

METADATA_HEADER = b"x-envoy-peer-metadata"
METADATA_ID_HEADER = b"x-envoy-peer-metadata-id"
UNKNOWN = "unknown"

CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"

MAX_HEADER_BYTES = 8192
"""Peer metadata longer than this (base64) is ignored."""
_MAX_DEPTH = 4
_MISS = object()


@dataclass(frozen=True, eq=False)
class PeerMetadata:
    """One workload's metadata, as exchanged (empty strings: not known).

    Compared and hashed by identity: :class:`PeerMetadataCache` hands out one
    object per distinct header value, so it can key metric label caches.
    """

    name: str = ""
    namespace: str = ""
    workload: str = ""
    cluster_id: str = ""
    app: str = ""
    version: str = ""
    canonical_service: str = ""
    canonical_revision: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_struct(self) -> dict[str, object]:
        """The ``Struct`` Istio's ``convertWorkloadMetadataToStruct`` builds."""
        out: dict[str, object] = {}
        if self.name:
            out["NAME"] = self.name
        if self.namespace:
            out["NAMESPACE"] = self.namespace
        if self.workload:
            out["WORKLOAD_NAME"] = self.workload
        if self.cluster_id:
            out["CLUSTER_ID"] = self.cluster_id
        labels: dict[str, object] = dict(self.labels)
        for key, value in (
            (CANONICAL_NAME, self.canonical_service),
            (CANONICAL_REVISION, self.canonical_revision),
            ("app", self.app),
            ("version", self.version),
        ):
            if value:
                labels[key] = value
        out["LABELS"] = labels
        if self.workload and self.namespace:
            out["OWNER"] = (
                f"kubernetes://apis/apps/v1/namespaces/{self.namespace}/deployments/{self.workload}"
            )
        return out

    @classmethod
    def from_struct(cls, fields: Mapping[str, object]) -> PeerMetadata:
        """Read the fields Istio reads (``convertStructToWorkloadMetadata``); others are ignored."""

        def text(value: object) -> str:
            return value if isinstance(value, str) else ""

        raw_labels = fields.get("LABELS")
        labels = (
            {k: v for k, v in raw_labels.items() if isinstance(v, str)}
            if isinstance(raw_labels, dict)
            else {}
        )
        return cls(
            name=text(fields.get("NAME")),
            namespace=text(fields.get("NAMESPACE")),
            workload=text(fields.get("WORKLOAD_NAME")),
            cluster_id=text(fields.get("CLUSTER_ID")),
            app=labels.get("app", ""),
            version=labels.get("version", ""),
            canonical_service=labels.get(CANONICAL_NAME, ""),
            canonical_revision=labels.get(CANONICAL_REVISION, ""),
            labels=labels,
        )

    def header_value(self) -> bytes:
        """``x-envoy-peer-metadata``: base64 of the deterministic serialization."""
        return base64.b64encode(encode_struct(self.to_struct()))


def local_metadata(workload: Workload, cluster_id: str, pod_name: str = "") -> PeerMetadata:
    """This workload's metadata, with Istio's canonical service and revision defaults.

    Canonical name: ``service.istio.io/canonical-name``, else
    ``app.kubernetes.io/name``, else ``app``, else the workload name; revision:
    ``service.istio.io/canonical-revision``, else ``app.kubernetes.io/version``,
    else ``version``, else ``latest`` (istio/istio ``pkg/model`` labels).
    """
    labels = dict(workload.labels)
    canonical = (
        labels.get(CANONICAL_NAME)
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload.name
    )
    revision = (
        labels.get(CANONICAL_REVISION)
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )
    return PeerMetadata(
        name=pod_name or f"{workload.name}-{socket.gethostname()}",
        namespace=workload.namespace,
        workload=workload.name,
        cluster_id=cluster_id,
        app=workload.app,
        version=workload.version,
        canonical_service=canonical,
        canonical_revision=revision,
        labels=labels,
    )


def node_id(meta: PeerMetadata, ip: str = "127.0.0.1") -> bytes:
    """``x-envoy-peer-metadata-id``: Envoy's node id for a sidecar."""
    ns = meta.namespace
    return f"sidecar~{ip}~{meta.name}.{ns}~{ns}.svc.cluster.local".encode("latin-1")


class PeerMetadataCache:
    """Decoded peer metadata per header value, bounded; one object per value.

    Thread-safe (a lock around the map); a full cache is cleared rather than
    evicting entry by entry, as Istio's MX cache trims itself.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._cache: dict[bytes, PeerMetadata | None] = {}

    def get(self, value: bytes) -> PeerMetadata | None:
        """The metadata in a ``x-envoy-peer-metadata`` value; ``None`` if unreadable."""
        hit = self._cache.get(value, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        meta = _decode_header(value)
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.clear()
            return self._cache.setdefault(value, meta)


def _decode_header(value: bytes) -> PeerMetadata | None:
    if not value or len(value) > MAX_HEADER_BYTES:
        return None
    try:
        raw = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
        fields = decode_struct(raw)
    except (binascii.Error, ValueError):
        return None
    return PeerMetadata.from_struct(fields)


# -- google.protobuf.Struct wire format ---------------------------------------------
#
# Struct   { map<string, Value> fields = 1; }   (map entry: key = 1, value = 2)
# Value    { null_value = 1; number_value = 2 (double); string_value = 3;
#            bool_value = 4; struct_value = 5; list_value = 6; }
# ListValue{ repeated Value values = 1; }

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _encode_value(value: object) -> bytes:
    if isinstance(value, bool):
        return _varint(4 << 3 | _VARINT) + _varint(int(value))
    if isinstance(value, str):
        return _len_field(3, value.encode("utf-8"))
    if isinstance(value, (int, float)):
        return _varint(2 << 3 | _I64) + struct.pack("<d", float(value))
    if isinstance(value, Mapping):
        return _len_field(5, encode_struct(value))
    if value is None:
        return _varint(1 << 3 | _VARINT) + _varint(0)
    if isinstance(value, (list, tuple)):
        return _len_field(6, b"".join(_len_field(1, _encode_value(v)) for v in value))
    raise TypeError(f"cannot encode {type(value).__name__} in a protobuf Struct")


def encode_struct(fields: Mapping[str, object]) -> bytes:
    """Serialize a ``google.protobuf.Struct`` deterministically (map keys sorted)."""
    out = bytearray()
    for key in sorted(fields):
        entry = _len_field(1, key.encode("utf-8")) + _len_field(2, _encode_value(fields[key]))
        out += _len_field(1, entry)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, object]]:
    """``(number, wire type, value)`` of each field: ints for varints, bytes otherwise."""
    out: list[tuple[int, int, object]] = []
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            out.append((number, wire, value))
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            out.append((number, wire, data[pos : pos + size]))
            pos += size
        elif wire == _I64:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            out.append((number, wire, data[pos : pos + 8]))
            pos += 8
        elif wire == _I32:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            out.append((number, wire, data[pos : pos + 4]))
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _decode_value(data: bytes, depth: int) -> object:
    value: object = None
    for number, wire, raw in _fields(data):
        if number == 3 and wire == _LEN:
            assert isinstance(raw, bytes)
            value = raw.decode("utf-8")
        elif number == 5 and wire == _LEN:
            assert isinstance(raw, bytes)
            value = _decode_struct(raw, depth + 1)
        elif number == 4 and wire == _VARINT:
            value = bool(raw)
        elif number == 2 and wire == _I64:
            assert isinstance(raw, bytes)
            value = struct.unpack("<d", raw)[0]
        elif number == 6 and wire == _LEN:
            assert isinstance(raw, bytes)
            if depth >= _MAX_DEPTH:
                raise ValueError("nested too deep")
            value = [
                _decode_value(v, depth + 1)
                for n, w, v in _fields(raw)
                if n == 1 and w == _LEN and isinstance(v, bytes)
            ]
        elif number == 1:
            value = None
    return value


def _decode_struct(data: bytes, depth: int) -> dict[str, object]:
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    out: dict[str, object] = {}
    for number, wire, entry in _fields(data):
        if number != 1 or wire != _LEN:
            continue
        assert isinstance(entry, bytes)
        key = ""
        value: object = None
        for n, w, raw in _fields(entry):
            if n == 1 and w == _LEN:
                assert isinstance(raw, bytes)
                key = raw.decode("utf-8")
            elif n == 2 and w == _LEN:
                assert isinstance(raw, bytes)
                value = _decode_value(raw, depth)
        out[key] = value
    return out


def decode_struct(data: bytes) -> dict[str, object]:
    """Parse a serialized ``google.protobuf.Struct``; ``ValueError`` if malformed."""
    try:
        return _decode_struct(data, 0)
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 in Struct: {exc}") from None
