"""Access log lines from real request flows: a 200, a 503 UH, a 504 UT and a 403.

The workloads run in-process (inmesh.testing): the caller's transport logs
the outbound side, the callee's middleware the inbound side, both in Istio's
default text format (docs/observability.md#access-logs) on ``inmesh.access``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from inmesh.testing import MeshTestbed

# Istio's default text format, field by field (istio-semantics.md §6.6).
LINE = re.compile(
    r"^\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>HTTP/1\.1)" '
    r"(?P<code>\d+) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) "
    r'"(?P<failure>[^"]*)" (?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+) '
    r'(?P<service_time>\S+) "(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "(?P<request_id>[^"]*)" '
    r'"(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)" (?P<cluster>\S+) '
    r"(?P<upstream_local>\S+) (?P<downstream_local>\S+) (?P<downstream_remote>\S+) "
    r"(?P<sni>\S+) (?P<route>\S+)$"
)


async def backend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        import anyio

        await anyio.sleep(1.0)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def testbed() -> Iterator[MeshTestbed]:
    with MeshTestbed() as tb:
        tb.workload("backend", app=backend, labels={"version": "v1"}, access_log="text")
        tb.workload("frontend", access_log="text")
        tb.apply(
            """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 0.2s
    route: [{destination: {host: backend}}]
  - route: [{destination: {host: backend}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"""
        )
        yield tb


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    out = []
    for record in caplog.records:
        if record.name == "inmesh.access":
            m = LINE.match(record.getMessage())
            assert m is not None, f"not Istio's format: {record.getMessage()!r}"
            out.append(m.groupdict())
    return out


def test_200_uh_ut_and_403_lines(testbed: MeshTestbed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inmesh.access")
    with testbed.client("frontend") as client:
        ok = client.get("http://backend:8080/hello", headers={"x-request-id": "rid-200"})
        assert ok.status_code == 200
        started = time.monotonic()
        slow = client.get("http://backend:8080/slow", headers={"x-request-id": "rid-504"})
        assert slow.status_code == 504
        assert time.monotonic() - started < 0.9
        denied = client.get("http://backend:8080/admin", headers={"x-request-id": "rid-403"})
        assert denied.status_code == 403
        testbed.remove("backend")
        gone = client.get("http://backend:8080/hello", headers={"x-request-id": "rid-503"})
        assert gone.status_code == 503
    lines = _lines(caplog)
    by_id: dict[tuple[str, str], dict[str, str]] = {}
    for line in lines:
        side = "in" if line["cluster"].startswith("inbound|") else "out"
        by_id[(line["request_id"], side)] = line

    out = by_id[("rid-200", "out")]
    assert (out["method"], out["path"], out["code"], out["flags"]) == ("GET", "/hello", "200", "-")
    assert out["details"] == "via_upstream"
    assert out["sent"] == "5"
    assert out["authority"] == "backend:8080"
    assert out["cluster"] == "outbound|8080||backend.default.svc.cluster.local"
    assert out["route"] == "-"  # the VirtualService's route has no name
    assert out["upstream_host"].endswith(":8080")
    assert out["service_time"].isdigit()
    inbound = by_id[("rid-200", "in")]
    assert (inbound["code"], inbound["flags"], inbound["cluster"]) == ("200", "-", "inbound|8080||")

    ut = by_id[("rid-504", "out")]
    assert (ut["code"], ut["flags"], ut["details"]) == ("504", "UT", "response_timeout")
    assert ut["sent"] == str(len(b"upstream request timeout"))
    assert ut["service_time"] == "-"
    # the callee saw its caller give up before it answered: code 0, DC
    cancelled = by_id[("rid-504", "in")]
    assert (cancelled["code"], cancelled["flags"]) == ("0", "DC")

    rbac = by_id[("rid-403", "in")]
    assert (rbac["code"], rbac["flags"]) == ("403", "-")
    assert rbac["details"].startswith("rbac_access_denied_matched_policy[")
    assert rbac["upstream_host"] == "-"
    assert by_id[("rid-403", "out")]["code"] == "403"

    uh = by_id[("rid-503", "out")]
    assert (uh["code"], uh["flags"], uh["details"]) == ("503", "UH", "no_healthy_upstream")
    assert uh["upstream_host"] == "-"
    assert uh["sent"] == str(len(b"no healthy upstream"))


def test_json_lines_carry_the_same_facts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inmesh.access")
    with MeshTestbed() as tb:
        tb.workload("backend", app=backend, access_log="json")
        tb.workload("frontend", access_log="json")
        with tb.client("frontend") as client:
            client.get(
                "http://backend:8080/x",
                headers={"x-request-id": "json-1", "authorization": "Bearer secret-token"},
            )
    docs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "inmesh.access"]
    assert {d["upstream_cluster"] for d in docs} == {
        "outbound|8080||backend.default.svc.cluster.local",
        "inbound|8080||",
    }
    for d in docs:
        assert d["request_id"] == "json-1"
        assert d["response_code"] == 200
        assert d["response_flags"] == "-"
        assert d["x_forwarded_for"] is None
    assert all("secret-token" not in r.getMessage() for r in caplog.records)
