"""VirtualService fault injection, sans I/O: Envoy's fault filter as Istio configures it.

Translation (istio/istio ``pilot/pkg/networking/core/route/route.go``,
``TranslateFault`` and ``translatePercentToFractionalPercent``):

* ``delay.percentage`` becomes a ``FractionalPercent`` out of a **million**,
  numerator ``uint32(value * 10000)`` (float64 product truncated, so ``0.57`` gives 5699
  ppm and anything below ``0.0001`` gives 0). Without ``percentage`` the
  deprecated integer ``percent`` is used, out of a **hundred**
  (``uint32(percent)``: above 100, or negative after Go's wrap-around, it
  always fires). Neither set: 0, **nothing is injected**.
* ``abort.percentage`` likewise; unset stays Envoy's default, 0 %.
* Only ``fixedDelay`` is translated (``exponentialDelay`` drops the delay;
  validation refuses it). The abort is ``httpStatus``, or ``grpcStatus`` by
  name (a name outside Istio's table reads as 0, ``OK``; validation refuses
  it); ``http2Error`` drops the abort.

Envoy's fault filter (envoyproxy/envoy
``source/extensions/filters/http/fault/fault_filter.cc``; docs
``configuration/http/http_filters/fault_filter``):

* The delay is drawn first, the abort second, **independently** (the abort
  draw happens when the delay ends), so a request can be delayed and then
  aborted. A draw fires when ``random % denominator < numerator``
  (``ProtobufPercentHelper::evaluateFractionalPercent``).
* The delay is whole milliseconds (``PROTOBUF_GET_MS_REQUIRED``); 0 ms is no
  delay. A delay sets flag ``DI``.
* An abort sets flag ``FI`` and sends the local reply ``fault filter abort``
  (details ``fault_filter_abort``) with the HTTP status; a gRPC abort uses
  HTTP 200 plus the gRPC status. What the client then sees depends on the
  request (``Utility::sendLocalReply``, see :meth:`FaultDecision.abort_reply`):
  a gRPC request (``content-type: application/grpc`` or ``application/grpc+*``)
  gets a trailers-only answer, 200 with ``grpc-status`` (the configured code,
  else mapped from the HTTP status) and ``grpc-message: fault filter abort``;
  any other request gets the HTTP status and a ``text/plain`` body (a gRPC
  abort of a non-gRPC request is a plain 200 with that body).
* Request headers cannot trigger or tune faults: ``x-envoy-fault-abort-request``,
  ``x-envoy-fault-delay-request`` and their ``-percentage`` variants are read
  only by ``header_abort``/``header_delay`` providers, which Istio never
  configures; the fixed providers ignore headers. The other knobs Istio leaves
  unset too (runtime keys, ``downstream_nodes``, ``upstream_cluster``,
  ``headers``, ``max_active_faults``), so none of them is modelled.

Istio puts the fault filter **before** the CORS filter (``listener_builder.go``:
``xdsfilters.Fault, xdsfilters.Cors``), so a faulted preflight is delayed or
aborted before CORS sees it, and an abort carries no CORS headers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from inmesh._clock import Random
from inmesh.config.resources._common import Duration
from inmesh.config.resources.virtual_service import FaultAbort, FaultDelay, HTTPFaultInjection

__all__ = [
    "FAULT_ABORT_BODY",
    "GRPC_STATUS_CODES",
    "MILLION",
    "CompiledFault",
    "FaultDecision",
    "http_to_grpc_status",
    "is_grpc_content_type",
]

FAULT_ABORT_BODY = "fault filter abort"
MILLION = 1_000_000
"""The denominator every fault share is kept in (parts per million)."""

_GRPC_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip
GRPC_STATUS_CODES: Mapping[str, int] = {name: code for code, name in enumerate(_GRPC_NAMES)}
"""Istio's ``grpc.SupportedGRPCStatus`` (``pkg/util/grpc/codes.go``): name to code."""

# Envoy Grpc::Utility::httpToGrpcStatus (source/common/grpc/status.cc).
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_GRPC_UNKNOWN = 2

Headers = tuple[tuple[str, str], ...]


def http_to_grpc_status(status: int) -> int:
    """Envoy's ``httpToGrpcStatus``: the gRPC code a local reply of ``status`` carries."""
    return _HTTP_TO_GRPC.get(status, _GRPC_UNKNOWN)


def is_grpc_content_type(content_type: str | None) -> bool:
    """Envoy's ``Grpc::Common::hasGrpcContentType``: ``application/grpc`` or ``application/grpc+...``.

    (``application/grpc-web`` is not gRPC.)
    """
    if content_type is None or not content_type.startswith("application/grpc"):
        return False
    return len(content_type) == 16 or content_type[16] == "+"


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What the fault filter does to one request: delay, abort, or both."""

    delay: float | None = None
    """Seconds to wait before forwarding (flag ``DI``); ``None``: no delay."""
    abort_status: int | None = None
    """HTTP status of the abort (flag ``FI``; 200 for a gRPC abort); ``None``: no abort."""
    grpc_status: int | None = None
    """The gRPC code of a gRPC abort (``abort_status`` is then 200)."""

    @property
    def aborts(self) -> bool:
        return self.abort_status is not None or self.grpc_status is not None

    @property
    def flags(self) -> tuple[str, ...]:
        """Response flags, in Envoy's order: ``DI`` then ``FI``."""
        if self.delay is None:
            return ("FI",) if self.aborts else ()
        return ("DI", "FI") if self.aborts else ("DI",)

    def abort_reply(self, *, grpc_request: bool) -> tuple[int, Headers, str] | None:
        """The abort's local reply as ``(status, headers, body)``; ``None`` without abort.

        ``grpc_request``: see :func:`is_grpc_content_type` on the request's
        ``content-type``. Headers the connection manager adds to every reply
        (``content-length``, ``date``, ``server``) are not included.
        """
        if not self.aborts:
            return None
        status = self.abort_status if self.abort_status is not None else 200
        if grpc_request:
            code = self.grpc_status if self.grpc_status is not None else http_to_grpc_status(status)
            headers: Headers = (
                ("content-type", "application/grpc"),
                ("grpc-status", str(code)),
                ("grpc-message", FAULT_ABORT_BODY),  # nothing in it needs percent-encoding
            )
            return 200, headers, ""
        return status, (("content-type", "text/plain"),), FAULT_ABORT_BODY


@dataclass(frozen=True, slots=True)
class CompiledFault:
    """A route's ``fault`` block as Envoy receives it, ready to draw per request.

    Shares are parts per million (:data:`MILLION` or more always fires).
    """

    delay: float | None
    """Whole milliseconds, in seconds; ``None``: no delay configured."""
    delay_ppm: int
    abort_status: int | None
    """HTTP status of the abort, 200 for a gRPC abort; ``None``: no abort configured."""
    grpc_status: int | None
    abort_ppm: int

    @classmethod
    def compile(cls, fault: HTTPFaultInjection) -> CompiledFault | None:
        """Translate as Istio does; ``None`` when nothing can ever fire."""
        delay, delay_ppm = _compile_delay(fault.delay)
        abort_status, grpc_status, abort_ppm = _compile_abort(fault.abort)
        if delay is None or delay_ppm <= 0:
            delay, delay_ppm = None, 0
        if abort_status is None or abort_ppm <= 0:
            abort_status, grpc_status, abort_ppm = None, None, 0
        if delay is None and abort_status is None:
            return None
        return cls(delay, delay_ppm, abort_status, grpc_status, abort_ppm)

    def decide(self, rng: Random) -> FaultDecision | None:
        """Draw the delay, then the abort, independently; ``None``: no fault this time."""
        delay = self.delay if self.delay_ppm and _fires(rng, self.delay_ppm) else None
        if self.abort_ppm and _fires(rng, self.abort_ppm):
            return FaultDecision(delay, self.abort_status, self.grpc_status)
        if delay is None:
            return None
        return FaultDecision(delay)


def _compile_delay(d: FaultDelay | None) -> tuple[float | None, int]:
    if d is None or d.fixed_delay is None:
        return None, 0  # no delay, or exponentialDelay (dropped by Istio)
    ms = _whole_millis(d.fixed_delay)
    if d.percentage is not None:
        ppm = _percentage_ppm(d.percentage.value)
    else:
        ppm = _integer_percent_ppm(d.percent or 0)
    return (ms / 1000 if ms > 0 else None), ppm


def _compile_abort(a: FaultAbort | None) -> tuple[int | None, int | None, int]:
    if a is None:
        return None, None, 0
    ppm = _percentage_ppm(a.percentage.value) if a.percentage is not None else 0
    if a.http_status is not None:
        return a.http_status, None, ppm
    if a.grpc_status is not None:
        # Go reads a missing map key as 0 (OK); validation refuses unknown names.
        return 200, GRPC_STATUS_CODES.get(a.grpc_status, 0), ppm
    return None, None, 0  # http2Error or no error type: Istio drops the abort


def _whole_millis(d: Duration) -> int:
    """Envoy's ``PROTOBUF_GET_MS_REQUIRED``: truncated to milliseconds."""
    return round(d.seconds * 1e9) // 1_000_000


def _percentage_ppm(value: float) -> int:
    """``uint32(value * 10000)`` out of a million; out-of-range values (refused by validation) clamp."""
    if math.isnan(value):
        return 0
    return min(max(int(value * 10_000), 0), MILLION)


def _integer_percent_ppm(percent: int) -> int:
    """The deprecated ``percent``: ``uint32(percent)`` out of a hundred, as parts per million.

    A negative ``int32`` wraps to a huge ``uint32`` and, like anything above
    100, always fires.
    """
    if percent < 0 or percent >= 100:
        return MILLION
    return percent * 10_000


def _fires(rng: Random, ppm: int) -> bool:
    return ppm >= MILLION or rng.randrange(MILLION) < ppm
