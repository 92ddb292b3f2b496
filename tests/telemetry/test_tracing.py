"""Propagation: the B3 propagator, the propagator choice, and B3 through the middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from prometheus_client import CollectorRegistry

import inmesh
from inmesh.model import Workload
from inmesh.telemetry import B3Propagator, Tracing
from inmesh.telemetry.tracing import header_map

from .conftest import Otel

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"


def extracted(carrier: dict[str, str]) -> trace.SpanContext:
    return trace.get_current_span(B3Propagator().extract(carrier)).get_span_context()


def test_b3_multi_headers() -> None:
    ctx = extracted({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"})
    assert ctx.is_valid
    assert ctx.is_remote
    assert ctx.trace_id == int(TRACE, 16)
    assert ctx.span_id == int(SPAN, 16)
    assert ctx.trace_flags.sampled


def test_b3_single_header() -> None:
    ctx = extracted({"b3": f"{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90"})
    assert (ctx.trace_id, ctx.span_id) == (int(TRACE, 16), int(SPAN, 16))
    assert ctx.trace_flags.sampled
    assert extracted({"b3": f"{TRACE}-{SPAN}-d"}).trace_flags.sampled  # debug
    assert not extracted({"b3": f"{TRACE}-{SPAN}-0"}).trace_flags.sampled
    assert not extracted({"b3": f"{TRACE}-{SPAN}"}).trace_flags.sampled


def test_b3_single_header_wins_over_multi() -> None:
    other = "1" * 32
    ctx = extracted({"b3": f"{TRACE}-{SPAN}-1", "x-b3-traceid": other, "x-b3-spanid": SPAN})
    assert ctx.trace_id == int(TRACE, 16)


def test_b3_64_bit_trace_ids() -> None:
    ctx = extracted({"x-b3-traceid": TRACE[16:], "x-b3-spanid": SPAN})
    assert ctx.trace_id == int(TRACE[16:], 16)


@pytest.mark.parametrize(
    "carrier",
    [
        {},
        {"x-b3-traceid": TRACE},
        {"x-b3-traceid": "zz" * 16, "x-b3-spanid": SPAN},
        {"x-b3-traceid": "0" * 32, "x-b3-spanid": SPAN},
        {"x-b3-traceid": TRACE, "x-b3-spanid": "0" * 16},
        {"x-b3-traceid": TRACE[:20], "x-b3-spanid": SPAN},
        {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN[:8]},
        {"b3": "0"},
        {"b3": "garbage"},
    ],
)
def test_b3_invalid_headers_give_no_parent(carrier: dict[str, str]) -> None:
    assert not extracted(carrier).is_valid


def test_b3_inject() -> None:
    span = trace.NonRecordingSpan(
        trace.SpanContext(
            int(TRACE, 16), int(SPAN, 16), is_remote=False, trace_flags=trace.TraceFlags(1)
        )
    )
    carrier: dict[str, str] = {}
    B3Propagator().inject(carrier, trace.set_span_in_context(span, Context()))
    assert carrier == {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}
    nothing: dict[str, str] = {}
    B3Propagator().inject(nothing, Context())
    assert nothing == {}


def test_propagator_fields() -> None:
    assert Tracing().fields() == frozenset({b"traceparent", b"tracestate", b"baggage"})
    assert Tracing(propagation="b3").fields() == frozenset(
        {b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled", b"x-b3-parentspanid"}
    )
    custom = B3Propagator()
    assert Tracing(propagation=custom).propagator is custom


def test_unknown_propagation_is_refused() -> None:
    with pytest.raises(ValueError, match="zipkin"):
        Tracing(propagation="zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        inmesh.Mesh([], workload=Workload("backend"), trace_propagation="zipkin")


def test_disabled_tracing_has_no_tracer() -> None:
    assert Tracing(enabled=False).tracer() is None


def test_header_map_first_value_wins() -> None:
    headers = [(b"Traceparent", b"first"), (b"traceparent", b"second"), (b"other", b"x")]
    assert header_map(headers, frozenset({b"traceparent"})) == {"traceparent": "first"}


def test_b3_server_span_through_the_middleware(otel: Otel) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with inmesh.Mesh(
        [],
        workload=Workload("backend"),
        metrics_registry=CollectorRegistry(),
        trace_propagation="b3",
    ) as mesh:

        async def go() -> None:
            transport = httpx.ASGITransport(mesh.asgi(app))
            async with httpx.AsyncClient(transport=transport, base_url="http://backend") as c:
                await c.get(
                    "/", headers={"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}
                )

        asyncio.run(go())
    (span,) = otel.spans()
    assert span.context.trace_id == int(TRACE, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(SPAN, 16)
