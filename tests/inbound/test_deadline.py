"""Inbound requests that carry a deadline hand it to the outbound calls they make."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from inmesh.inbound.asgi import MeshASGIMiddleware
from inmesh.inbound.context import StaticInboundContext
from inmesh.model import Workload
from inmesh.resilience.deadline import current_deadline


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    d = current_deadline()
    body = b"none" if d is None else str(round(d.remaining(_Clock()) * 1000)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class _Clock:
    def now(self) -> float:
        import time

        return time.monotonic()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"x-envoy-expected-rq-timeout-ms": "1500"}, 1400, 1500),
        ({"grpc-timeout": "2S"}, 1900, 2000),
        ({"grpc-timeout": "2S", "x-envoy-expected-rq-timeout-ms": "700"}, 600, 700),
    ],
)
async def test_asgi_sets_the_deadline(headers: dict[str, str], low: int, high: int) -> None:
    middleware = MeshASGIMiddleware(app, StaticInboundContext(Workload("backend")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(middleware), base_url="http://b") as c:
        r = await c.get("/", headers=headers)
        plain = await c.get("/")
    assert low <= int(r.text) <= high
    assert plain.text == "none"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
