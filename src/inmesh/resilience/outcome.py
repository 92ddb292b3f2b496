"""What happened to one upstream attempt, as the resilience machinery sees it (sans I/O).

The transports classify every attempt into an :class:`Outcome` and hand it
to the retry state, the outlier detector and the admission counters; none
of those look at exceptions or sockets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Failure", "Outcome"]


class Failure(str, enum.Enum):
    """Why an attempt got no response headers (Envoy's reset reasons, grouped)."""

    CONNECT_FAILURE = "connect_failure"
    """TCP or TLS connection could not be set up (refused, unreachable, handshake
    or identity failure); flag ``UF``. Envoy: ``connection failure``."""
    CONNECT_TIMEOUT = "connect_timeout"
    """The connection was not set up within ``connectTimeout``; flag ``UF``."""
    RESET_BEFORE_REQUEST = "reset_before_request"
    """The connection was lost before any request byte was written (a stale
    keep-alive connection); flag ``UC``."""
    RESET = "reset"
    """The upstream closed or reset the connection after the request was
    (partly) sent, before response headers; flag ``UC``/``UR``."""
    PER_TRY_TIMEOUT = "per_try_timeout"
    """``perTryTimeout`` expired before response headers; flag ``UT``."""
    OVERFLOW = "overflow"
    """A circuit breaker refused the attempt; flag ``UO``. Never retried,
    never counted by outlier detection."""
    REFUSED_STREAM = "refused_stream"
    """HTTP/2 REFUSED_STREAM (not produced by the HTTP/1.1 transports)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: a response (``status`` and the headers that
    matter) or a :class:`Failure`.

    * ``status``: the HTTP status of the response headers, ``None`` when
      there was no response.
    * ``grpc_status``: ``grpc-status`` from the response headers (a
      trailers-only gRPC response), ``None`` if absent.
    * ``failure``: why there was no response.
    * ``ratelimited``: the response carried ``x-envoy-ratelimited``.
    * ``local_origin``: the failure was detected locally (connect failure,
      timeout, reset) rather than sent by the upstream, for outlier
      detection's split mode.
    """

    status: int | None = None
    grpc_status: int | None = None
    failure: Failure | None = None
    ratelimited: bool = False

    @classmethod
    def response(
        cls, status: int, *, grpc_status: int | None = None, ratelimited: bool = False
    ) -> Outcome:
        return cls(status=status, grpc_status=grpc_status, ratelimited=ratelimited)

    @classmethod
    def failed(cls, failure: Failure) -> Outcome:
        return cls(failure=failure)

    @property
    def local_origin(self) -> bool:
        return self.failure is not None
