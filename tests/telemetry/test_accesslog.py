"""Access log lines in Istio's default text format and its JSON encoding.

The expected lines are written out literally, in the shape of the examples on
istio.io (tasks/observability/logs/access-log) and of Envoy's operators
(istio-semantics.md §6.6).
"""

from __future__ import annotations

import calendar
import json

import pytest

from inmesh.telemetry.accesslog import AccessRecord, format_json, format_text, start_time

T = calendar.timegm((2020, 11, 25, 21, 26, 18, 0, 0, 0)) + 0.409  # 2020-11-25T21:26:18.409Z

OK = AccessRecord(
    start_time=T,
    method="GET",
    path="/status/200",
    response_code=200,
    response_flags="-",
    response_code_details="via_upstream",
    bytes_received=0,
    bytes_sent=135,
    duration_ms=4,
    upstream_service_time="4",
    user_agent="curl/7.73.0-DEV",
    request_id="84961386-6d84-929d-98bd-c5aee93b5c88",
    authority="httpbin:8000",
    upstream_host="10.44.1.27:80",
    upstream_cluster="outbound|8000||httpbin.foo.svc.cluster.local",
    upstream_local_address="10.44.1.23:37652",
    downstream_local_address="10.0.45.184:8000",
    downstream_remote_address="10.44.1.23:46520",
    route_name="default",
)

NO_HEALTHY_UPSTREAM = AccessRecord(
    start_time=T,
    method="GET",
    path="/api/items?page=2",
    response_code=503,
    response_flags="UH",
    response_code_details="no_healthy_upstream",
    bytes_sent=len(b"no healthy upstream"),
    user_agent="python-httpx/0.28.1",
    request_id="2b9f3a52-1c1e-4c4e-9d6a-6f1b1e0c9a11",
    authority="backend:8080",
    upstream_cluster="outbound|8080||backend.default.svc.cluster.local",
    route_name="default",
)

TIMEOUT = AccessRecord(
    start_time=T,
    method="POST",
    path="/slow",
    response_code=504,
    response_flags="UT",
    response_code_details="response_timeout",
    bytes_received=17,
    bytes_sent=len(b"upstream request timeout"),
    duration_ms=1001,
    x_forwarded_for="203.0.113.9",
    user_agent="python-httpx/0.28.1",
    request_id="0c6f6b2e-5d43-4c0f-8a3e-1b2c3d4e5f60",
    authority="backend.default.svc.cluster.local:8080",
    upstream_host="10.44.1.27:8080",
    upstream_cluster="outbound|8080|v1|backend.default.svc.cluster.local",
    upstream_local_address="10.44.1.23:40122",
    route_name="backend-route",
)

DENIED = AccessRecord(
    start_time=T,
    method="GET",
    path="/admin",
    response_code=403,
    response_flags="-",
    response_code_details="rbac_access_denied_matched_policy[none]",
    bytes_sent=len(b"RBAC: access denied"),
    user_agent="curl/8.5.0",
    request_id="9e8d7c6b-5a49-4837-a625-14131211100f",
    authority="backend:8080",
    upstream_cluster="inbound|8080||",
    downstream_local_address="10.44.1.27:8080",
    downstream_remote_address="10.44.1.23:51234",
    requested_server_name="outbound_.8080_._.backend.default.svc.cluster.local",
    route_name="default",
)

CONNECT_FAILURE = AccessRecord(
    start_time=T,
    method="GET",
    path="/",
    response_code=503,
    response_flags="UF,URX",
    response_code_details="upstream_reset_before_response_started{remote_connection_failure}",
    upstream_transport_failure_reason="delayed connect error: 111",
    bytes_sent=91,
    duration_ms=12,
    request_id="r-1",
    authority="backend:8080",
    upstream_host="10.44.1.27:8080",
    upstream_cluster="outbound|8080||backend.default.svc.cluster.local",
    route_name="default",
)


@pytest.mark.parametrize(
    ("record", "line"),
    [
        (
            OK,
            '[2020-11-25T21:26:18.409Z] "GET /status/200 HTTP/1.1" 200 - via_upstream - "-" '
            '0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" '
            '"httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local '
            "10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default",
        ),
        (
            NO_HEALTHY_UPSTREAM,
            '[2020-11-25T21:26:18.409Z] "GET /api/items?page=2 HTTP/1.1" 503 UH '
            'no_healthy_upstream - "-" 0 19 0 - "-" "python-httpx/0.28.1" '
            '"2b9f3a52-1c1e-4c4e-9d6a-6f1b1e0c9a11" "backend:8080" "-" '
            "outbound|8080||backend.default.svc.cluster.local - - - - default",
        ),
        (
            TIMEOUT,
            '[2020-11-25T21:26:18.409Z] "POST /slow HTTP/1.1" 504 UT response_timeout - "-" '
            '17 24 1001 - "203.0.113.9" "python-httpx/0.28.1" '
            '"0c6f6b2e-5d43-4c0f-8a3e-1b2c3d4e5f60" "backend.default.svc.cluster.local:8080" '
            '"10.44.1.27:8080" outbound|8080|v1|backend.default.svc.cluster.local '
            "10.44.1.23:40122 - - - backend-route",
        ),
        (
            DENIED,
            '[2020-11-25T21:26:18.409Z] "GET /admin HTTP/1.1" 403 - '
            'rbac_access_denied_matched_policy[none] - "-" 0 19 0 - "-" "curl/8.5.0" '
            '"9e8d7c6b-5a49-4837-a625-14131211100f" "backend:8080" "-" inbound|8080|| - '
            "10.44.1.27:8080 10.44.1.23:51234 "
            "outbound_.8080_._.backend.default.svc.cluster.local default",
        ),
        (
            CONNECT_FAILURE,
            '[2020-11-25T21:26:18.409Z] "GET / HTTP/1.1" 503 UF,URX '
            "upstream_reset_before_response_started{remote_connection_failure} - "
            '"delayed connect error: 111" 0 91 12 - "-" "-" "r-1" "backend:8080" '
            '"10.44.1.27:8080" outbound|8080||backend.default.svc.cluster.local - - - - default',
        ),
    ],
    ids=["200", "503-UH", "504-UT", "403-rbac", "503-UF"],
)
def test_text_format(record: AccessRecord, line: str) -> None:
    assert format_text(record) == line


def test_text_format_dashes_everything_unset() -> None:
    bare = AccessRecord(start_time=0.0, method="GET", path="/")
    assert format_text(bare) == (
        '[1970-01-01T00:00:00.000Z] "GET / HTTP/1.1" 0 - - - "-" 0 0 0 - "-" "-" "-" "-" "-" '
        "- - - - - -"
    )
    assert "\n" not in format_text(bare)


def test_empty_flags_are_a_dash() -> None:
    assert ' 200 - via_upstream ' in format_text(
        AccessRecord(
            start_time=T, method="GET", path="/", response_code=200, response_flags="",
            response_code_details="via_upstream",
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (T, "2020-11-25T21:26:18.409Z"),
        (calendar.timegm((2023, 11, 14, 22, 13, 20, 0, 0, 0)) + 0.123, "2023-11-14T22:13:20.123Z"),
        (calendar.timegm((2024, 2, 29, 23, 59, 59, 0, 0, 0)) + 0.999, "2024-02-29T23:59:59.999Z"),
        (calendar.timegm((2024, 2, 29, 23, 59, 59, 0, 0, 0)) + 0.9994, "2024-02-29T23:59:59.999Z"),
        (calendar.timegm((2024, 2, 29, 12, 0, 0, 0, 0, 0)) + 0.001, "2024-02-29T12:00:00.001Z"),
    ],
)
def test_start_time_is_utc_iso_with_milliseconds(ts: float, text: str) -> None:
    """Milliseconds are truncated (Envoy's ``%E3S``), never off by one from float error."""
    assert start_time(ts) == text


# -- JSON ------------------------------------------------------------------------------

JSON_KEYS = {
    # istio-semantics.md §6.6: the keys of Istio's JSON encoding
    "start_time",
    "route_name",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
    "upstream_transport_failure_reason",
}


@pytest.mark.parametrize("record", [OK, NO_HEALTHY_UPSTREAM, TIMEOUT, DENIED, CONNECT_FAILURE])
def test_json_has_exactly_istios_keys(record: AccessRecord) -> None:
    line = format_json(record)
    doc = json.loads(line)
    assert set(doc) == JSON_KEYS
    assert list(doc) == sorted(doc)
    assert "\n" not in line


def test_json_values_are_typed() -> None:
    doc = json.loads(format_json(TIMEOUT))
    assert doc == {
        "authority": "backend.default.svc.cluster.local:8080",
        "bytes_received": 17,
        "bytes_sent": 24,
        "connection_termination_details": None,
        "downstream_local_address": None,
        "downstream_remote_address": None,
        "duration": 1001,
        "method": "POST",
        "path": "/slow",
        "protocol": "HTTP/1.1",
        "request_id": "0c6f6b2e-5d43-4c0f-8a3e-1b2c3d4e5f60",
        "requested_server_name": None,
        "response_code": 504,
        "response_code_details": "response_timeout",
        "response_flags": "UT",
        "route_name": "backend-route",
        "start_time": "2020-11-25T21:26:18.409Z",
        "upstream_cluster": "outbound|8080|v1|backend.default.svc.cluster.local",
        "upstream_host": "10.44.1.27:8080",
        "upstream_local_address": "10.44.1.23:40122",
        "upstream_service_time": None,
        "upstream_transport_failure_reason": None,
        "user_agent": "python-httpx/0.28.1",
        "x_forwarded_for": "203.0.113.9",
    }
    for key in ("response_code", "bytes_received", "bytes_sent", "duration"):
        assert type(doc[key]) is int, key


def test_json_missing_values_are_null_and_flags_a_dash() -> None:
    doc = json.loads(format_json(AccessRecord(start_time=0.0, method="GET", path="/")))
    assert doc["response_flags"] == "-"
    assert doc["response_code"] == 0
    assert doc["bytes_received"] == doc["bytes_sent"] == doc["duration"] == 0
    assert doc["start_time"] == "1970-01-01T00:00:00.000Z"
    nulls = {k for k, v in doc.items() if v is None}
    assert nulls == JSON_KEYS - {
        "start_time",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "bytes_received",
        "bytes_sent",
        "duration",
    }
    flags = json.loads(
        format_json(AccessRecord(start_time=0.0, method="GET", path="/", response_flags=""))
    )["response_flags"]
    assert flags == "-"


def test_json_escapes_quotes() -> None:
    record = AccessRecord(start_time=T, method="GET", path='/a"b', user_agent='say "hi"')
    doc = json.loads(format_json(record))
    assert doc["path"] == '/a"b'
    assert doc["user_agent"] == 'say "hi"'
