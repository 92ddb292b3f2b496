"""SpiffeId: the SPIFFE-ID.md rules, Istio's shape and principal form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inmesh.errors import IdentityError
from inmesh.identity.spiffe import (
    MAX_SPIFFE_ID_BYTES,
    SpiffeId,
    SpiffeIdError,
    validate_trust_domain,
)

VALID = [
    (
        "spiffe://cluster.local/ns/default/sa/frontend-sa",
        "cluster.local",
        "/ns/default/sa/frontend-sa",
    ),
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/path", "example.org", "/path"),
    ("spiffe://example.org/a/b/c", "example.org", "/a/b/c"),
    (
        "spiffe://td_with-all.chars_0-9/Path.With_All-CHARS.09",
        "td_with-all.chars_0-9",
        "/Path.With_All-CHARS.09",
    ),
    ("spiffe://x/..a/a../.../b", "x", "/..a/a../.../b"),  # dots inside segments are fine
    ("spiffe://1.2.3.4/svc", "1.2.3.4", "/svc"),
    (
        "spiffe://k8s-west.example.com/ns/staging/sa/default",
        "k8s-west.example.com",
        "/ns/staging/sa/default",
    ),
    (
        "spiffe://example.org/9eebccd2-12bf-40a6-b262-65fe0487d453",
        "example.org",
        "/9eebccd2-12bf-40a6-b262-65fe0487d453",
    ),
]

INVALID = [
    ("", "empty"),
    ("cluster.local/ns/default/sa/x", "scheme 'spiffe://' is missing"),
    ("http://cluster.local/ns/x", "scheme must be 'spiffe'"),
    ("SPIFFE://cluster.local/ns/x", "lower-case"),
    ("spiffe:/cluster.local/ns/x", "scheme 'spiffe://' is missing"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path", "trust domain is missing"),
    ("spiffe://Cluster.Local/ns/x", "may only contain lower-case"),
    ("spiffe://user@cluster.local/ns/x", "userinfo"),
    ("spiffe://cluster.local:8080/ns/x", "port"),
    ("spiffe://clus ter/ns", "may only contain"),
    ("spiffe://cluster.local/ns/x?query=1", "query"),
    ("spiffe://cluster.local/ns/x#frag", "fragment"),
    ("spiffe://cluster.local/", "must not end with '/'"),
    ("spiffe://cluster.local/ns/x/", "must not end with '/'"),
    ("spiffe://cluster.local//ns", "empty segments"),
    ("spiffe://cluster.local/ns//x", "empty segments"),
    ("spiffe://cluster.local/./ns", "'.' or '..'"),
    ("spiffe://cluster.local/ns/..", "'.' or '..'"),
    ("spiffe://cluster.local/ns/a%20b", "percent-encoded"),
    ("spiffe://cluster.local/ns/a b", "may only contain letters"),
    ("spiffe://cluster.local/ns/é", "may only contain letters"),
    ("spiffe://cluster.local/ns/a*b", "may only contain letters"),
    ("spiffe://" + "a" * 256, "longer than 255 bytes"),
    (
        "spiffe://td/" + "a" * (MAX_SPIFFE_ID_BYTES - len("spiffe://td/") + 1),
        "longer than 2048 bytes",
    ),
]


@pytest.mark.parametrize(("text", "td", "path"), VALID, ids=[v[0][:60] for v in VALID])
def test_valid(text: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain, sid.path) == (td, path)
    assert str(sid) == sid.uri == text
    assert SpiffeId.parse(str(sid)) == sid
    assert SpiffeId.from_principal(sid.principal) == sid


@pytest.mark.parametrize(("text", "reason"), INVALID, ids=[v[0][:40] or "<empty>" for v in INVALID])
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse(text)
    assert reason in str(info.value)
    assert isinstance(info.value, IdentityError)
    assert isinstance(info.value, ValueError)
    assert info.value.value == text
    assert "invalid SPIFFE ID" in str(info.value)


def test_longest_valid() -> None:
    prefix = "spiffe://td/"
    text = prefix + "a" * (MAX_SPIFFE_ID_BYTES - len(prefix))
    assert len(text) == MAX_SPIFFE_ID_BYTES
    assert SpiffeId.parse(text).path == "/" + "a" * (MAX_SPIFFE_ID_BYTES - len(prefix))


def test_non_string() -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(b"spiffe://x/y")  # type: ignore[arg-type]


def test_constructor_validates() -> None:
    assert SpiffeId("cluster.local", "/ns/a/sa/b").uri == "spiffe://cluster.local/ns/a/sa/b"
    with pytest.raises(SpiffeIdError, match="must start with '/'"):
        SpiffeId("cluster.local", "ns/a")
    with pytest.raises(SpiffeIdError, match="trust domain"):
        SpiffeId("CLUSTER", "/x")


def test_for_workload_and_istio_properties() -> None:
    sid = SpiffeId.for_workload("default", "frontend-sa")
    assert str(sid) == "spiffe://cluster.local/ns/default/sa/frontend-sa"
    assert sid.principal == "cluster.local/ns/default/sa/frontend-sa"
    assert sid.namespace == "default"
    assert sid.service_account == "frontend-sa"
    assert sid.trust_domain == "cluster.local"
    assert sid.is_istio_workload
    assert sid.segments == ("ns", "default", "sa", "frontend-sa")
    other = SpiffeId.for_workload("prod", "api", trust_domain="example.org")
    assert str(other) == "spiffe://example.org/ns/prod/sa/api"
    assert other.member_of("example.org") and not other.member_of("cluster.local")


@pytest.mark.parametrize(
    "text", ["spiffe://td", "spiffe://td/ns/a", "spiffe://td/ns/a/sa/b/c", "spiffe://td/x/a/sa/b"]
)
def test_not_istio_shaped(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert not sid.is_istio_workload
    assert sid.namespace is None and sid.service_account is None


@pytest.mark.parametrize(
    ("ns", "sa"), [("", "sa"), ("ns", ""), ("a/b", "sa"), ("ns", ".."), ("ns", "x y")]
)
def test_for_workload_rejects(ns: str, sa: str) -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.for_workload(ns, sa)


def test_for_workload_rejects_bad_trust_domain() -> None:
    with pytest.raises(SpiffeIdError, match="trust domain"):
        SpiffeId.for_workload("ns", "sa", trust_domain="Bad")


def test_principal_form() -> None:
    sid = SpiffeId.from_principal("cluster.local/ns/default/sa/sleep")
    assert sid == SpiffeId.for_workload("default", "sleep")
    assert SpiffeId.from_principal("spiffe://cluster.local/ns/default/sa/sleep") == sid
    with pytest.raises(SpiffeIdError):
        SpiffeId.from_principal("http://cluster.local/ns/default/sa/sleep")
    with pytest.raises(SpiffeIdError):
        SpiffeId.from_principal("*")


def test_value_semantics() -> None:
    a = SpiffeId.parse("spiffe://cluster.local/ns/a/sa/b")
    b = SpiffeId.for_workload("a", "b")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert repr(a) == "SpiffeId('spiffe://cluster.local/ns/a/sa/b')"
    with pytest.raises(AttributeError):
        a.path = "/x"  # type: ignore[misc]


def test_validate_trust_domain() -> None:
    assert validate_trust_domain("cluster.local") == "cluster.local"
    for bad in ("", "Cluster", "a:1", "a@b", "a/b", "a" * 256):
        with pytest.raises(SpiffeIdError):
            validate_trust_domain(bad)


def test_import_is_light() -> None:
    """inmesh.identity.spiffe (and SpiffeId via the package) does not load cryptography or ssl."""
    code = (
        "import sys; from inmesh.identity import SpiffeId; SpiffeId.parse('spiffe://a/b'); "
        "print('cryptography' in sys.modules, 'ssl' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["False", "False"]
