"""Tracing with opentelemetry-api: spans when an SDK is installed, header forwarding otherwise.

* With an OpenTelemetry SDK tracer provider installed
  (``opentelemetry.trace.set_tracer_provider``), the middleware starts a
  SERVER span per inbound request, made current for the app (contextvars),
  and the transports start a CLIENT span per outbound request, parented on
  whatever span is current, and inject it upstream with the propagator
  (W3C ``traceparent``/``tracestate`` + ``baggage`` by default: the global
  propagator; B3 when configured).
* With no SDK (the API alone), no span objects are made at all: the trace
  headers of the inbound request are kept in the request's context and
  copied onto the outbound calls made while serving it, so a trace started
  upstream continues downstream at near-zero cost.

Either way the application forwards nothing itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator

__all__ = ["B3Propagator", "Tracing"]

_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_MISSING = object()
_UNSEEN = object()


class _HeaderGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


class _HeaderSetter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key.lower()] = value


GETTER = _HeaderGetter()
SETTER = _HeaderSetter()


class B3Propagator(TextMapPropagator):
    """Zipkin B3 propagation: reads ``b3`` (single) or ``x-b3-*`` (multi); writes multi.

    What Istio's Envoy uses when the mesh's tracer is Zipkin. Select it with
    ``Mesh(trace_propagation="b3")``.
    """

    _FIELDS = frozenset({"x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-parentspanid", "b3"})

    def extract(
        self,
        carrier: Any,
        context: Context | None = None,
        getter: Getter[Any] = GETTER,
    ) -> Context:
        ctx = context if context is not None else Context()

        def one(name: str) -> str:
            values = getter.get(carrier, name)
            return values[0] if values else ""

        trace_id = span_id = sampled = ""
        single = one("b3")
        if single:
            parts = single.split("-")
            if len(parts) >= 2:
                trace_id, span_id = parts[0], parts[1]
                sampled = parts[2] if len(parts) > 2 else ""
        else:
            trace_id, span_id, sampled = (
                one("x-b3-traceid"),
                one("x-b3-spanid"),
                one("x-b3-sampled"),
            )
        try:
            tid = int(trace_id, 16)
            sid = int(span_id, 16)
        except ValueError:
            return ctx
        if len(trace_id) not in (16, 32) or len(span_id) != 16 or not tid or not sid:
            return ctx
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled in ("1", "d") else 0)
        span = trace.NonRecordingSpan(
            trace.SpanContext(tid, sid, is_remote=True, trace_flags=flags)
        )
        return trace.set_span_in_context(span, ctx)

    def inject(
        self,
        carrier: Any,
        context: Context | None = None,
        setter: Setter[Any] = SETTER,
    ) -> None:
        sc = trace.get_current_span(context).get_span_context()
        if not sc.is_valid:
            return
        setter.set(carrier, "x-b3-traceid", f"{sc.trace_id:032x}")
        setter.set(carrier, "x-b3-spanid", f"{sc.span_id:016x}")
        setter.set(carrier, "x-b3-sampled", "1" if sc.trace_flags.sampled else "0")

    @property
    def fields(self) -> set[str]:
        return set(self._FIELDS)


class Tracing:
    """The mesh's tracing: which propagator, and whether spans are made.

    ``propagation``: ``"w3c"`` (default: the global propagator, W3C trace
    context and baggage unless the app configured another), ``"b3"``, or a
    :class:`~opentelemetry.propagators.textmap.TextMapPropagator`.
    ``enabled=False`` turns spans and forwarding off.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        propagation: str | TextMapPropagator = "w3c",
        tracer_name: str = "inmesh",
    ) -> None:
        self.enabled = enabled
        if isinstance(propagation, TextMapPropagator):
            self._propagator: TextMapPropagator | None = propagation
        elif propagation == "b3":
            self._propagator = B3Propagator()
        elif propagation == "w3c":
            self._propagator = None  # the global one, read when used
        else:
            raise ValueError(f"trace propagation {propagation!r} is not 'w3c' or 'b3'")
        self._tracer_name = tracer_name
        self._provider: object = _UNSEEN
        self._tracer: trace.Tracer | None = None

    @property
    def propagator(self) -> TextMapPropagator:
        return self._propagator if self._propagator is not None else get_global_textmap()

    def fields(self) -> frozenset[bytes]:
        """The header names the propagator reads (lower case), for forwarding."""
        return frozenset(f.lower().encode("latin-1") for f in self.propagator.fields)

    def tracer(self) -> trace.Tracer | None:
        """The tracer when an SDK provider is installed, else ``None`` (no spans)."""
        if not self.enabled:
            return None
        # The API's global, read directly: get_tracer_provider() consults the
        # environment on every call until a provider is set (~0.5 µs).
        raw = getattr(trace, "_TRACER_PROVIDER", _MISSING)
        if raw is self._provider and raw is not _MISSING:
            return self._tracer
        provider: Any = trace.get_tracer_provider()
        if isinstance(provider, _NO_SDK):
            tracer = None
        else:
            from inmesh._version import __version__

            tracer = provider.get_tracer(self._tracer_name, __version__)
        self._provider, self._tracer = raw, tracer
        return tracer

    def extract(self, headers: Mapping[str, str]) -> Context:
        return self.propagator.extract(headers, getter=GETTER)

    def inject(self, span: trace.Span, context: Context | None = None) -> dict[str, str]:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, trace.set_span_in_context(span, context), setter=SETTER)
        return carrier


def header_map(headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]) -> dict[str, str]:
    """The headers among ``names`` as a ``str`` map (first value wins)."""
    out: dict[str, str] = {}
    for k, v in headers:
        lk = k.lower()
        if lk in names:
            out.setdefault(lk.decode("latin-1"), v.decode("latin-1"))
    return out


def set_attributes(span: trace.Span, attributes: Sequence[tuple[str, Any]]) -> None:
    for key, value in attributes:
        if value is not None and value != "":
            span.set_attribute(key, value)
