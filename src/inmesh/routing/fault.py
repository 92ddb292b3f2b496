"""VirtualService fault injection, sans I/O: Envoy's fault filter as Istio configures it.

Istio's ``TranslateFault`` (istio/istio
``pilot/pkg/networking/core/route/route.go``) turns ``fault`` into Envoy's
``HTTPFault``:

* ``delay.percentage`` becomes a ``FractionalPercent`` out of a **million**
  (``uint32(value * 10000)``, truncated); without ``percentage`` the
  deprecated integer ``percent`` is used, out of a hundred; neither means 0 %:
  **an unset percentage injects nothing**. Only ``fixedDelay`` is translated
  (``exponentialDelay`` is dropped; validation refuses it).
* ``abort.percentage`` likewise; unset is Envoy's default, 0 %. The abort is
  ``httpStatus``, or ``grpcStatus`` by name (a gRPC abort is an HTTP 200 with
  ``grpc-status``); ``http2Error`` is dropped.

Envoy's fault filter (``source/extensions/filters/http/fault/fault_filter.cc``)
then draws **independently** for the delay and for the abort, delay first:
a request may be delayed, then aborted. A draw fires when a uniform value in
``[0, denominator)`` is below the numerator. Header-controlled faults
(``x-envoy-fault-*``) need ``header_delay``/``header_abort`` in the filter
config, which Istio never sets, so request headers cannot trigger faults.
The abort reply's body is ``fault filter abort`` (flag ``FI``); a delay sets
flag ``DI``.
"""

from __future__ import annotations

from dataclasses import dataclass

from inmesh._clock import Random
from inmesh.config.resources.virtual_service import HTTPFaultInjection

__all__ = ["FAULT_ABORT_BODY", "GRPC_STATUS_CODES", "CompiledFault", "FaultDecision"]

FAULT_ABORT_BODY = "fault filter abort"

_GRPC_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip
GRPC_STATUS_CODES = {name: code for code, name in enumerate(_GRPC_NAMES)}
"""gRPC status names (as Istio accepts them) to their codes."""

_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What the fault filter does to one request."""

    delay: float | None = None
    """Seconds to wait before forwarding (flag ``DI``)."""
    abort_status: int | None = None
    """HTTP status to answer with (flag ``FI``, body ``fault filter abort``)."""
    grpc_status: int | None = None
    """gRPC abort: HTTP 200 with this ``grpc-status``."""

    @property
    def aborts(self) -> bool:
        return self.abort_status is not None or self.grpc_status is not None

    @property
    def flags(self) -> tuple[str, ...]:
        return (("DI",) if self.delay is not None else ()) + (("FI",) if self.aborts else ())


@dataclass(frozen=True, slots=True)
class CompiledFault:
    """A route's fault block, ready to draw per request."""

    delay: float | None
    delay_ppm: int
    abort_status: int | None
    grpc_status: int | None
    abort_ppm: int

    @classmethod
    def compile(cls, fault: HTTPFaultInjection) -> CompiledFault | None:
        """``None`` when nothing can ever fire (no delay or abort, or 0 %)."""
        delay: float | None = None
        delay_ppm = 0
        d = fault.delay
        if d is not None and d.fixed_delay is not None:
            delay = d.fixed_delay.seconds
            if d.percentage is not None:
                delay_ppm = _ppm(d.percentage.value)
            else:
                delay_ppm = min(max(d.percent or 0, 0), 100) * 10_000
        abort_status: int | None = None
        grpc_status: int | None = None
        abort_ppm = 0
        a = fault.abort
        if a is not None:
            if a.http_status is not None:
                abort_status = a.http_status
            elif a.grpc_status is not None:
                grpc_status = GRPC_STATUS_CODES.get(a.grpc_status)
            if (abort_status is not None or grpc_status is not None) and a.percentage is not None:
                abort_ppm = _ppm(a.percentage.value)
        if delay_ppm <= 0 and abort_ppm <= 0:
            return None
        return cls(delay, delay_ppm, abort_status, grpc_status, abort_ppm)

    def decide(self, rng: Random) -> FaultDecision | None:
        """Draw for this request (delay, then abort, independently); ``None``: no fault."""
        delay = self.delay if self.delay_ppm and _fires(rng, self.delay_ppm) else None
        aborted = self.abort_ppm and _fires(rng, self.abort_ppm)
        if delay is None and not aborted:
            return None
        if not aborted:
            return FaultDecision(delay=delay)
        return FaultDecision(delay, self.abort_status, self.grpc_status)


def _ppm(percent: float) -> int:
    """Istio: ``uint32(value * 10000)`` parts per million (truncated), capped at 100 %."""
    return min(max(int(percent * 10_000), 0), _MILLION)


def _fires(rng: Random, ppm: int) -> bool:
    return ppm >= _MILLION or rng.randrange(_MILLION) < ppm
