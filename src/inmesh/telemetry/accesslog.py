"""Envoy access log lines in Istio's default formats, sans I/O.

Text (MeshConfig ``accessLogEncoding: TEXT`` with an empty ``accessLogFormat``)::

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
    %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(one line). JSON (``accessLogEncoding: JSON``): the keys Istio's
``telemetry_logging.go`` names, with Envoy's typed JSON values: numbers for
``response_code``, ``bytes_*`` and ``duration``, ``null`` where a value is
not available (the text format writes ``-``).

Only request metadata is logged: never a certificate, a key, or the value of
``authorization``/``cookie`` headers (none of the operators reads them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

__all__ = ["AccessRecord", "format_json", "format_text", "start_time"]


@dataclass(slots=True)
class AccessRecord:
    """One request as an access log sees it (``None``/``""``: not available)."""

    start_time: float
    """Unix time the request started."""
    method: str
    path: str
    """``x-envoy-original-path`` if the path was rewritten, else the path sent."""
    protocol: str = "HTTP/1.1"
    response_code: int = 0
    response_flags: str = "-"
    response_code_details: str = ""
    upstream_transport_failure_reason: str = ""
    bytes_received: int = 0
    bytes_sent: int = 0
    duration_ms: int = 0
    upstream_service_time: str | None = None
    x_forwarded_for: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    authority: str | None = None
    upstream_host: str = ""
    upstream_cluster: str = ""
    upstream_local_address: str = ""
    downstream_local_address: str = ""
    downstream_remote_address: str = ""
    requested_server_name: str = ""
    route_name: str = ""


def start_time(ts: float) -> str:
    """``%START_TIME%``: ISO 8601 in UTC with milliseconds (``2026-11-27T10:00:00.123Z``)."""
    # Round to microseconds first: a float like 1606339578.409 is 1606339578.4089999...
    # Then truncate to milliseconds, as Envoy's %E3S does.
    seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
    ms = micros // 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def _dash(value: str | None) -> str:
    return value if value else "-"


def format_text(r: AccessRecord) -> str:
    """The record in Istio's default text format (without the trailing newline)."""
    return (
        f'[{start_time(r.start_time)}] "{r.method} {r.path} {r.protocol}" '
        f"{r.response_code} {r.response_flags or '-'} {_dash(r.response_code_details)} - "
        f'"{_dash(r.upstream_transport_failure_reason)}" {r.bytes_received} {r.bytes_sent} '
        f"{r.duration_ms} {_dash(r.upstream_service_time)} "
        f'"{_dash(r.x_forwarded_for)}" "{_dash(r.user_agent)}" "{_dash(r.request_id)}" '
        f'"{_dash(r.authority)}" "{_dash(r.upstream_host)}" {_dash(r.upstream_cluster)} '
        f"{_dash(r.upstream_local_address)} {_dash(r.downstream_local_address)} "
        f"{_dash(r.downstream_remote_address)} {_dash(r.requested_server_name)} "
        f"{_dash(r.route_name)}"
    )


def _null(value: str | None) -> str | None:
    return value if value else None


def format_json(r: AccessRecord) -> str:
    """The record in Istio's JSON encoding (keys sorted, as Envoy writes them)."""
    doc = {
        "authority": _null(r.authority),
        "bytes_received": r.bytes_received,
        "bytes_sent": r.bytes_sent,
        "connection_termination_details": None,
        "downstream_local_address": _null(r.downstream_local_address),
        "downstream_remote_address": _null(r.downstream_remote_address),
        "duration": r.duration_ms,
        "method": _null(r.method),
        "path": _null(r.path),
        "protocol": r.protocol,
        "request_id": _null(r.request_id),
        "requested_server_name": _null(r.requested_server_name),
        "response_code": r.response_code,
        "response_code_details": _null(r.response_code_details),
        "response_flags": r.response_flags or "-",
        "route_name": _null(r.route_name),
        "start_time": start_time(r.start_time),
        "upstream_cluster": _null(r.upstream_cluster),
        "upstream_host": _null(r.upstream_host),
        "upstream_local_address": _null(r.upstream_local_address),
        "upstream_service_time": _null(r.upstream_service_time),
        "upstream_transport_failure_reason": _null(r.upstream_transport_failure_reason),
        "user_agent": _null(r.user_agent),
        "x_forwarded_for": _null(r.x_forwarded_for),
    }
    return json.dumps(doc, separators=(",", ":"))
