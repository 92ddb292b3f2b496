"""PeerAuthentication precedence: mesh < namespace < workload < port, UNSET inherits."""

from __future__ import annotations

import pytest

from inmesh.policy.peer_authn import MtlsMode, PeerAuthnPolicy, effective_peer_authentication

ROOT = "istio-system"
APP = {"app": "backend", "version": "v1"}


def mesh(mode: str, **kw: object) -> PeerAuthnPolicy:
    return PeerAuthnPolicy(ROOT, kw.pop("name", "mesh"), mode, **kw)  # type: ignore[arg-type]


def ns(mode: str, namespace: str = "default", **kw: object) -> PeerAuthnPolicy:
    return PeerAuthnPolicy(namespace, kw.pop("name", "ns"), mode, **kw)  # type: ignore[arg-type]


def wl(
    mode: str,
    selector: dict[str, str] | None = None,
    ports: dict[int, str] | None = None,
    **kw: object,
) -> PeerAuthnPolicy:
    return PeerAuthnPolicy(
        "default", kw.pop("name", "wl"), mode, selector or {"app": "backend"}, ports or {}, **kw
    )  # type: ignore[arg-type]


CASES = [
    ("nothing -> PERMISSIVE", [], None, MtlsMode.PERMISSIVE),
    ("mesh STRICT", [mesh("STRICT")], None, MtlsMode.STRICT),
    ("mesh UNSET -> PERMISSIVE", [mesh("UNSET")], None, MtlsMode.PERMISSIVE),
    ("namespace overrides mesh", [mesh("STRICT"), ns("PERMISSIVE")], None, MtlsMode.PERMISSIVE),
    ("namespace UNSET inherits mesh", [mesh("STRICT"), ns("UNSET")], None, MtlsMode.STRICT),
    ("workload overrides namespace", [ns("STRICT"), wl("DISABLE")], None, MtlsMode.DISABLE),
    ("workload UNSET inherits namespace", [ns("STRICT"), wl("UNSET")], None, MtlsMode.STRICT),
    (
        "workload UNSET inherits mesh through UNSET ns",
        [mesh("STRICT"), ns("UNSET"), wl("UNSET")],
        None,
        MtlsMode.STRICT,
    ),
    (
        "non-matching selector ignored",
        [ns("STRICT"), wl("DISABLE", {"app": "other"})],
        None,
        MtlsMode.STRICT,
    ),
    ("other namespace ignored", [ns("STRICT", namespace="other")], None, MtlsMode.PERMISSIVE),
    (
        "selector policy in root namespace ignored",
        [PeerAuthnPolicy(ROOT, "x", "STRICT", {"app": "backend"})],
        None,
        MtlsMode.PERMISSIVE,
    ),
    (
        "port level overrides",
        [ns("STRICT"), wl("STRICT", ports={9090: "DISABLE"})],
        9090,
        MtlsMode.DISABLE,
    ),
    (
        "port level on other port",
        [ns("STRICT"), wl("STRICT", ports={9090: "DISABLE"})],
        8080,
        MtlsMode.STRICT,
    ),
    (
        "port level UNSET inherits workload",
        [ns("DISABLE"), wl("STRICT", ports={9090: "UNSET"})],
        9090,
        MtlsMode.STRICT,
    ),
    (
        "port level UNSET inherits through UNSET workload",
        [mesh("STRICT"), wl("UNSET", ports={9090: "UNSET"})],
        9090,
        MtlsMode.STRICT,
    ),
    (
        "port level with mesh PERMISSIVE",
        [mesh("PERMISSIVE"), wl("UNSET", ports={8080: "STRICT"})],
        8080,
        MtlsMode.STRICT,
    ),
    (
        "oldest namespace policy wins",
        [
            ns("STRICT", name="b", created="2024-01-02T00:00:00Z"),
            ns("DISABLE", name="a", created="2024-01-01T00:00:00Z"),
        ],
        None,
        MtlsMode.DISABLE,
    ),
    (
        "oldest workload policy wins",
        [
            wl("STRICT", name="new", created="2025-01-01T00:00:00Z"),
            wl("DISABLE", name="old", created="2020-01-01T00:00:00Z"),
        ],
        None,
        MtlsMode.DISABLE,
    ),
    (
        "same age: name order",
        [ns("STRICT", name="b"), ns("DISABLE", name="a")],
        None,
        MtlsMode.DISABLE,
    ),
    ("subset selector matches", [wl("STRICT", {"version": "v1"})], None, MtlsMode.STRICT),
]


@pytest.mark.parametrize(
    ("policies", "port", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_precedence(policies: list[PeerAuthnPolicy], port: int | None, expected: MtlsMode) -> None:
    eff = effective_peer_authentication(
        policies, namespace="default", labels=APP, root_namespace=ROOT
    )
    assert eff.for_port(port) is expected


def test_workload_in_root_namespace_uses_mesh_policy_once() -> None:
    eff = effective_peer_authentication(
        [mesh("STRICT")], namespace=ROOT, labels=APP, root_namespace=ROOT
    )
    assert eff.mode is MtlsMode.STRICT
    assert eff.sources == (f"{ROOT}/mesh",)


def test_sources_name_the_deciding_policies() -> None:
    eff = effective_peer_authentication(
        [mesh("STRICT"), ns("UNSET"), wl("DISABLE")],
        namespace="default",
        labels=APP,
        root_namespace=ROOT,
    )
    assert eff.sources == (f"{ROOT}/mesh", "default/ns", "default/wl")
