"""Fixtures of the outbound tests: a CA, workload certificates, servers, the workload's source."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Iterator

import pytest

from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import MemorySource
from inmesh.identity.tls import build_server_context

from . import BACKEND, EVIL, FRONTEND, HTTPServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(scope="session")
def ca() -> LocalCA:
    return LocalCA.create(intermediate=True)


@pytest.fixture(scope="session")
def other_ca() -> LocalCA:
    return LocalCA.create()


@pytest.fixture(scope="session")
def backend_cert(ca: LocalCA) -> WorkloadCertificate:
    return ca.issue(BACKEND)


@pytest.fixture
def source(ca: LocalCA) -> Iterator[MemorySource]:
    """The calling workload's identity (frontend), rotatable with ``update``."""
    with MemorySource(ca.issue(FRONTEND)) as src:
        yield src


@pytest.fixture
def serve() -> Iterator[Callable[[ssl.SSLContext | None], HTTPServer]]:
    """Start :class:`HTTPServer` s; all are closed at teardown."""
    servers: list[HTTPServer] = []

    def start(ctx: ssl.SSLContext | None) -> HTTPServer:
        server = HTTPServer(ctx)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def mesh_server(
    serve: Callable[[ssl.SSLContext | None], HTTPServer], backend_cert: WorkloadCertificate
) -> HTTPServer:
    """A STRICT mesh server presenting the backend's SPIFFE ID, issuing session tickets."""
    ctx = build_server_context(backend_cert, alpn_protocols=["istio-http/1.1"])
    return serve(ctx)


@pytest.fixture
def evil_server(serve: Callable[[ssl.SSLContext | None], HTTPServer], ca: LocalCA) -> HTTPServer:
    """A server with a valid chain from the mesh CA, but an unexpected SPIFFE ID."""
    return serve(build_server_context(ca.issue(EVIL)))


@pytest.fixture
def foreign_server(
    serve: Callable[[ssl.SSLContext | None], HTTPServer], other_ca: LocalCA
) -> HTTPServer:
    """The expected SPIFFE ID, from another CA."""
    return serve(build_server_context(other_ca.issue(BACKEND)))


@pytest.fixture
def expired_server(serve: Callable[[ssl.SSLContext | None], HTTPServer], ca: LocalCA) -> HTTPServer:
    """The expected SPIFFE ID, expired an hour ago."""
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    return serve(build_server_context(ca.issue(BACKEND, ttl=dt.timedelta(hours=2), now=past)))
