"""Telemetry: Istio's standard metrics, traces and Envoy access logs, from both sides.

See docs/observability.md. The pieces:

* :mod:`~inmesh.telemetry.core`: :class:`Telemetry`, what the transports and
  middleware call per request;
* :mod:`~inmesh.telemetry.metrics`: the Istio metric families and the mesh's
  own state;
* :mod:`~inmesh.telemetry.peer`: Istio's metadata exchange between peers;
* :mod:`~inmesh.telemetry.tracing`: OpenTelemetry spans and propagation;
* :mod:`~inmesh.telemetry.accesslog`: Istio's access log formats.
"""

from __future__ import annotations

from .core import ACCESS_LOGGER, InboundCall, OutboundCall, Telemetry, current_inbound
from .tracing import B3Propagator, Tracing

__all__ = [
    "ACCESS_LOGGER",
    "B3Propagator",
    "InboundCall",
    "OutboundCall",
    "Telemetry",
    "Tracing",
    "current_inbound",
]
