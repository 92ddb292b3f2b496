"""``inmesh.testing``: a mesh of in-process apps, for your own tests.

A :class:`MeshTestbed` is a small Istio cluster inside one test: it owns a
configuration directory, a development CA and a :class:`FakeClock`, and makes
:class:`~inmesh.Mesh` objects for named workloads. A workload given an ASGI
or WSGI ``app`` is served in-process, behind its mesh's inbound middleware,
at a fake endpoint address (``10.0.0.N``), and is registered with a
ServiceEntry and a WorkloadEntry so that the other workloads reach it at
``http://<service>:<port>``. The httpx clients the testbed hands out
(:meth:`MeshTestbed.client`, :meth:`MeshTestbed.async_client`) use the mesh's
own transports, so routing, retries, outlier detection, mutual TLS identities,
authorization and telemetry are the real ones; only the network is replaced:
requests are handed to the app in the same process, with no socket.

>>> with MeshTestbed() as testbed:                               # doctest: +SKIP
...     testbed.workload("backend", app=backend_app)
...     frontend = testbed.workload("frontend")
...     testbed.apply(virtual_service_yaml)
...     with testbed.client(frontend) as client:
...         assert client.get("http://backend:8080/").status_code == 200

What is faked, and how:

* **The network.** An in-process connector takes the place of the outbound
  connector: it finds the app registered at the endpoint's ``address:port``
  and calls it. ASGI apps get a scope with the ASGI TLS extension carrying the
  caller's client certificate (mutual TLS, as the mesh decided it); WSGI apps
  get ``SSL_CLIENT_CERT`` from a trusted "front server". The response carries
  the server workload's SPIFFE ID, as a verified TLS connection would, so both
  sides label their metrics with the peer. An address nothing serves, or a
  workload taken :meth:`~MeshTestbed.down`, refuses the connection (Envoy's
  503 ``UF``, ``delayed connect error: 111``).
* **Time.** Every mesh's clock is the testbed's :class:`FakeClock`: outlier
  ejections, slow start and retry budgets move when the test calls
  :meth:`FakeClock.advance`. Timeouts stay real (they bound real waits).
* **Chance.** Every random choice (weighted routes, load balancing, faults)
  comes from a :class:`random.Random` seeded from the testbed's ``seed`` and
  the workload's name: the same test makes the same choices every run.
* **Back-off.** Clients retry without Envoy's back-off sleep unless asked
  (``retry_backoff=True``).
* **Identity.** Each workload's certificate is issued by the testbed's CA for
  ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``.
* **Metrics.** Each mesh has its own ``prometheus_client.CollectorRegistry``;
  :func:`metric_value` sums its samples.

See docs/testing.md for a guided example and the comparison with httpx's
``MockTransport``.
"""

from __future__ import annotations

import errno
import functools
import http
import io
import itertools
import logging
import random
import re
import shutil
import sys
import tempfile
import threading
import typing
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote, unquote_to_bytes

import anyio
import anyio.from_thread
import anyio.to_thread
import httpcore
import httpx
import yaml

from .config.snapshot import ConfigOptions, build_snapshot
from .errors import ConfigError
from .identity.ca import LocalCA
from .identity.sources import MemorySource
from .identity.spiffe import SpiffeId
from .mesh import Mesh
from .model import Workload
from .outbound._common import PEER_ID
from .outbound._errors import UpstreamConnectError, UpstreamIdentityError
from .upstream.tls import PLAINTEXT, UpstreamTLS, UpstreamTLSMode

if typing.TYPE_CHECKING:
    from collections.abc import Hashable

    from .outbound._async.connect import AsyncConnector
    from .outbound._async.transport import AsyncMeshTransport
    from .outbound._common import PoolLimits
    from .outbound._sync.connect import Connector
    from .outbound._sync.transport import MeshTransport

__all__ = ["SERVICE_LABEL", "FakeClock", "MeshTestbed", "metric_value"]

log = logging.getLogger("inmesh.testing")

SERVICE_LABEL = "inmesh.testing/service"
"""The WorkloadEntry label the generated ServiceEntries select their endpoints by."""

_FORBIDDEN_OPTIONS = frozenset(
    {
        "config",
        "workload",
        "identity",
        "cert_dir",
        "watch",
        "poll_interval",
        "trust_domain",
        "default_namespace",
        "root_namespace",
        "domain_suffix",
    }
)
"""Mesh options the testbed owns (one cluster, one CA, one configuration)."""

_DOMAIN_SUFFIX = "cluster.local"
_CLIENT_PORT = 50000
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

Interface = Literal["auto", "asgi", "wsgi"]


class FakeClock:
    """A monotonic clock that moves only when told to.

    Give it to :class:`~inmesh.Mesh` as ``clock=`` (a :class:`MeshTestbed`
    does so for every mesh it makes) and the state the mesh keeps in time
    moves with :meth:`advance`: outlier ejections end, slow-start windows
    pass, retry budgets slide. Thread-safe.

    >>> clock = FakeClock()
    >>> clock.advance(31)
    31.0
    >>> clock.now()
    31.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (not negative); return the new time."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


def metric_value(mesh: Mesh, name: str, /, **labels: str) -> float:
    """The sum of ``mesh``'s metric samples called ``name`` whose labels include ``labels``.

    ``name`` is a sample name as exposed (``istio_requests_total``,
    ``istio_request_duration_milliseconds_count``, ...). 0.0 when nothing
    matches or the mesh has no metrics registry.

    >>> metric_value(frontend, "istio_requests_total",          # doctest: +SKIP
    ...              reporter="source", response_code="200")
    3.0
    """
    registry = mesh.metrics_registry
    if registry is None:
        return 0.0
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@dataclass(eq=False)
class _Member:
    """A workload of the testbed: its mesh, address, and the app it serves (if any)."""

    name: str
    mesh: Mesh
    address: str
    service: str
    port: int
    app: Any = None
    """The app wrapped in the mesh's inbound middleware, or ``None``."""
    asgi: bool = False
    up: bool = True
    clients: int = 0


class MeshTestbed:
    """In-process workloads, their meshes, their configuration; closes everything.

    >>> with MeshTestbed() as testbed:                           # doctest: +SKIP
    ...     testbed.workload("reviews-v1", service="reviews", labels={"version": "v1"}, app=v1)
    ...     testbed.workload("reviews-v2", service="reviews", labels={"version": "v2"}, app=v2)
    ...     productpage = testbed.workload("productpage")
    ...     testbed.apply(open("mesh/reviews.yaml").read())
    ...     client = testbed.client(productpage)

    * ``seed``: seeds every random source (weighted routes, load balancing,
      faults), per workload name.
    * ``trust_domain``: the SPIFFE trust domain of the testbed's CA and meshes.
    * ``clock``: the clock of every mesh (default: a new :class:`FakeClock`,
      at :attr:`clock`).
    * ``raise_app_exceptions``: an exception escaping an app is raised in the
      caller (default, as httpx's ``ASGITransport`` does); ``False``: the
      caller gets a 500, as from a real server.

    Every mesh is made with ``watch=False``: configuration changes go through
    :meth:`apply` and :meth:`delete`, which reload every mesh before they
    return. Workload names are unique within a testbed. Not meant for
    concurrent reconfiguration, but requests may run from any thread or task
    (asyncio or trio) while the testbed stands.
    """

    def __init__(
        self,
        *,
        seed: int | str = 0,
        trust_domain: str = "cluster.local",
        clock: FakeClock | None = None,
        raise_app_exceptions: bool = True,
    ) -> None:
        self.seed = seed
        """The seed of every random source."""
        self.clock: FakeClock = clock if clock is not None else FakeClock()
        """The clock of every mesh; :meth:`FakeClock.advance` it to move time."""
        self.trust_domain = trust_domain
        """The trust domain of the CA and of every mesh."""
        self.ca = LocalCA.create(trust_domain)
        """The development CA that issues every workload's certificate."""
        self.raise_app_exceptions = raise_app_exceptions
        """Whether an app's exception reaches the caller (else: a 500)."""
        self.config_dir = Path(tempfile.mkdtemp(prefix="inmesh-testbed-"))
        """The directory every mesh reads its configuration from (one file per resource)."""
        self._options = ConfigOptions(trust_domain=trust_domain, domain_suffix=_DOMAIN_SUFFIX)
        self._lock = threading.RLock()
        self._members: dict[str, _Member] = {}
        self._endpoints: dict[tuple[str, int], _Member] = {}
        self._resources: dict[tuple[str, str, str], str] = {}
        self._service_ports: dict[tuple[str, str], int] = {}
        self._next_address = itertools.count()
        self._clients: list[httpx.Client] = []
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._portal_cm: Any = None
        self._closed = False

    # -- configuration ------------------------------------------------------------

    def apply(self, *resources: str | Mapping[str, Any]) -> None:
        """Create or replace Istio resources, then reload every mesh.

        Each argument is YAML text (several documents, or a ``List``, allowed)
        or one resource as a mapping. A resource replaces the one with the
        same kind, namespace and name (the namespace defaults to
        ``default``). The whole configuration is checked first: on an error
        nothing changes and :class:`~inmesh.errors.ConfigError` is raised.
        """
        changes: dict[tuple[str, str, str], str | None] = {}
        for resource in resources:
            for item in _documents(resource):
                changes[_resource_key(item)] = yaml.safe_dump(item, sort_keys=False)
        self._change(changes)

    def delete(self, kind: str, name: str, *, namespace: str = "default") -> None:
        """Delete a resource (by kind, name and namespace), then reload every mesh.

        Raises :class:`KeyError` when there is no such resource.
        """
        key = (kind, namespace, name)
        with self._lock:
            if key not in self._resources:
                raise KeyError(f"no {kind} {namespace}/{name} in the testbed")
            self._change({key: None})

    @property
    def resources(self) -> dict[tuple[str, str, str], str]:
        """The configuration: YAML text by ``(kind, namespace, name)`` (a copy)."""
        with self._lock:
            return dict(self._resources)

    # -- workloads --------------------------------------------------------------------

    def workload(
        self,
        name: str,
        *,
        app: Any = None,
        namespace: str = "default",
        service_account: str | None = None,
        labels: Mapping[str, str] | None = None,
        service: str | None = None,
        port: int = 8080,
        locality: str = "",
        interface: Interface = "auto",
        register: bool = True,
        **mesh_options: Any,
    ) -> Mesh:
        """A new workload and its :class:`~inmesh.Mesh` (closed with the testbed).

        * ``app``: an ASGI or WSGI app (``interface``: ``"auto"`` guesses as
          ``inmesh serve`` does) to serve behind the mesh's inbound middleware
          at this workload's address and ``port``. Without one the workload
          only calls out.
        * ``service``: the service the app belongs to (default: ``name``);
          several workloads may serve one service (give them the same
          ``port``), for example one per version. ``register``: create the
          ServiceEntry ``<service>.<namespace>.svc.cluster.local`` (one HTTP
          port) and this workload's WorkloadEntry (default); ``False``: serve
          at :meth:`address` and let the test write its own entries.
        * ``service_account`` (default: ``name``): the identity,
          ``spiffe://<trust domain>/ns/<namespace>/sa/<service_account>``.
        * ``labels``: the workload's labels, ``app: <service>`` added unless
          given. The WorkloadEntry carries them (so DestinationRule subsets
          select it) plus :data:`SERVICE_LABEL`.
        * ``locality``: ``region/zone/subzone``, of the workload and its endpoint.
        * ``mesh_options``: more :class:`~inmesh.Mesh` options
          (``outbound_traffic_policy``, ``custom_authorizer``,
          ``path_normalization``, ``access_log``, ...; ``clock``, ``rng`` and
          ``metrics_registry`` replace the testbed's). The testbed sets the
          configuration, identity and trust domain itself.
        """
        given = _FORBIDDEN_OPTIONS.intersection(mesh_options)
        if given:
            raise TypeError(f"the testbed sets {', '.join(sorted(given))} itself")
        if interface not in ("auto", "asgi", "wsgi"):
            raise ValueError(f"interface must be 'auto', 'asgi' or 'wsgi', not {interface!r}")
        service = service or name
        account = service_account or name
        workload = Workload(
            name,
            namespace=namespace,
            service_account=account,
            labels={"app": service, **(labels or {})},
            locality=locality,
        )
        from prometheus_client import CollectorRegistry

        with self._lock:
            self._check_open()
            if name in self._members:
                raise ValueError(f"the testbed already has a workload called {name!r}")
            if app is not None and register:
                known = self._service_ports.get((namespace, service))
                if known is not None and known != port:
                    raise ValueError(
                        f"service {namespace}/{service} is served on port {known}; "
                        f"workload {name!r} asks for {port}"
                    )
            address = _address(next(self._next_address))
            cert = self.ca.issue(SpiffeId.for_workload(namespace, account, self.trust_domain))
            options: dict[str, Any] = {
                "clock": self.clock,
                "rng": random.Random(f"{self.seed}/{name}/mesh"),
                "metrics_registry": CollectorRegistry(),
                **mesh_options,
            }
            mesh = Mesh(
                [self.config_dir],
                workload=workload,
                identity=MemorySource(cert),
                trust_domain=self.trust_domain,
                default_namespace="default",
                domain_suffix=_DOMAIN_SUFFIX,
                watch=False,
                **options,
            )
            member = _Member(name, mesh, address, service, port)
            self._members[name] = member
            try:
                if app is not None:
                    member.asgi = _is_asgi(app) if interface == "auto" else interface == "asgi"
                    member.app = (
                        mesh.asgi(app) if member.asgi else mesh.wsgi(app, trust_front_server=True)
                    )
                    if register:
                        self._change(self._entries(member, workload))
                        self._service_ports[(namespace, service)] = port
                    self._endpoints[(address, port)] = member
            except BaseException:
                del self._members[name]
                mesh.close()
                raise
            return mesh

    def mesh(self, name: str) -> Mesh:
        """The mesh of the workload called ``name``."""
        return self._member(name).mesh

    def address(self, name: str) -> str:
        """The fake IP address of the workload called ``name`` (its endpoint, its source IP)."""
        return self._member(name).address

    def down(self, name: str) -> None:
        """Make the workload's endpoint refuse connections (its process "crashed").

        It stays in the registry: callers get 503 ``UF`` (``delayed connect
        error: 111``) and outlier detection counts connect failures, until
        :meth:`up`.
        """
        member = self._serving(name)
        member.up = False

    def up(self, name: str) -> None:
        """Make a workload taken :meth:`down` accept connections again."""
        member = self._serving(name)
        member.up = True

    def remove(self, name: str) -> None:
        """Remove a workload: its endpoint leaves the registry and its mesh closes.

        The ServiceEntry stays, as a Kubernetes Service scaled to zero: with no
        endpoint left, callers get 503 ``no healthy upstream`` (``UH``).
        """
        with self._lock:
            member = self._member(name)
            key = ("WorkloadEntry", member.mesh.workload.namespace, name)
            self._endpoints.pop((member.address, member.port), None)
            del self._members[name]
            if key in self._resources:
                self._change({key: None})
        member.mesh.close()

    @property
    def meshes(self) -> dict[str, Mesh]:
        """Every workload's mesh, by workload name (a copy)."""
        with self._lock:
            return {name: m.mesh for name, m in self._members.items()}

    # -- clients ----------------------------------------------------------------------

    def transport(
        self, mesh: Mesh | str, *, retry_backoff: bool = False, errors: str = "reply"
    ) -> MeshTransport:
        """``mesh``'s sync transport (see :meth:`inmesh.Mesh.transport`) over the testbed.

        ``retry_backoff``: sleep Envoy's back-off between retries (default
        off: retries go at once). ``errors``: as for :meth:`inmesh.Mesh.transport`.
        """
        from .outbound._sync.transport import MeshTransport

        member = self._caller(mesh)
        member.mesh.outbound_planner()  # configuration errors surface here
        connector = _InProcessConnector(self, member)
        return MeshTransport(
            member.mesh,
            typing.cast("Connector", connector),
            errors=errors,
            rng=self._client_rng(member),
            source_ip=member.address,
            passthrough=_Passthrough(connector),
            retry_backoff=retry_backoff,
        )

    def async_transport(
        self, mesh: Mesh | str, *, retry_backoff: bool = False, errors: str = "reply"
    ) -> AsyncMeshTransport:
        """``mesh``'s async transport over the testbed (asyncio or trio); see :meth:`transport`."""
        from .outbound._async.transport import AsyncMeshTransport

        member = self._caller(mesh)
        member.mesh.outbound_planner()
        connector = typing.cast("AsyncConnector", _AsyncInProcessConnector(self, member))
        return AsyncMeshTransport(
            member.mesh,
            connector,
            shadow_connector=connector,
            errors=errors,
            rng=self._client_rng(member),
            source_ip=member.address,
            passthrough=_AsyncPassthrough(_AsyncInProcessConnector(self, member)),
            retry_backoff=retry_backoff,
        )

    def client(
        self,
        mesh: Mesh | str,
        *,
        retry_backoff: bool = False,
        errors: str = "reply",
        **client_options: Any,
    ) -> httpx.Client:
        """An ``httpx.Client`` calling out as ``mesh``'s workload, without sockets.

        ``client_options`` go to ``httpx.Client`` (``base_url``, ``headers``,
        ``timeout``, ...). Closed with the testbed if still open.
        """
        client = httpx.Client(
            transport=self.transport(mesh, retry_backoff=retry_backoff, errors=errors),
            **client_options,
        )
        with self._lock:
            self._clients.append(client)
        return client

    def async_client(
        self,
        mesh: Mesh | str,
        *,
        retry_backoff: bool = False,
        errors: str = "reply",
        **client_options: Any,
    ) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` calling out as ``mesh``'s workload (asyncio or trio).

        As :meth:`client`; close it with ``async with`` or ``aclose()`` (it
        holds no connection, so one left open leaks nothing).
        """
        return httpx.AsyncClient(
            transport=self.async_transport(mesh, retry_backoff=retry_backoff, errors=errors),
            **client_options,
        )

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the clients and meshes made here and delete the configuration. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients, self._clients = self._clients, []
            members = list(self._members.values())
            self._endpoints.clear()
            portal_cm, self._portal_cm, self._portal = self._portal_cm, None, None
        for client in clients:
            client.close()
        for member in members:
            member.mesh.close()
        if portal_cm is not None:
            portal_cm.__exit__(None, None, None)
        shutil.rmtree(self.config_dir, ignore_errors=True)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> MeshTestbed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._members)} workloads"
        return f"<MeshTestbed {state}>"

    # -- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the testbed is closed")

    def _member(self, name: str) -> _Member:
        try:
            return self._members[name]
        except KeyError:
            raise KeyError(f"no workload called {name!r} in the testbed") from None

    def _serving(self, name: str) -> _Member:
        member = self._member(name)
        if member.app is None:
            raise ValueError(f"workload {name!r} serves no app")
        return member

    def _caller(self, mesh: Mesh | str) -> _Member:
        self._check_open()
        if isinstance(mesh, str):
            return self._member(mesh)
        for member in self._members.values():
            if member.mesh is mesh:
                return member
        raise ValueError(f"{mesh!r} was not made by this testbed")

    def _client_rng(self, member: _Member) -> random.Random:
        with self._lock:
            member.clients += 1
            return random.Random(f"{self.seed}/{member.name}/client/{member.clients}")

    def _entries(
        self, member: _Member, workload: Workload
    ) -> dict[tuple[str, str, str], str | None]:
        """The ServiceEntry of ``member``'s service and its WorkloadEntry, as changes."""
        ns = workload.namespace
        service_entry = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": member.service, "namespace": ns},
            "spec": {
                "hosts": [f"{member.service}.{ns}.svc.{_DOMAIN_SUFFIX}"],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "ports": [{"number": member.port, "name": "http", "protocol": "HTTP"}],
                "workloadSelector": {"labels": {SERVICE_LABEL: member.service}},
            },
        }
        spec: dict[str, Any] = {
            "address": member.address,
            "labels": {**workload.labels, SERVICE_LABEL: member.service},
            "serviceAccount": workload.service_account,
        }
        if workload.locality:
            spec["locality"] = workload.locality
        workload_entry = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": member.name, "namespace": ns},
            "spec": spec,
        }
        changes: dict[tuple[str, str, str], str | None] = {}
        se_key = ("ServiceEntry", ns, member.service)
        if se_key not in self._resources:
            changes[se_key] = yaml.safe_dump(service_entry, sort_keys=False)
        changes[("WorkloadEntry", ns, member.name)] = yaml.safe_dump(
            workload_entry, sort_keys=False
        )
        return changes

    def _change(self, changes: Mapping[tuple[str, str, str], str | None]) -> None:
        """Write ``changes`` (``None``: delete), check the result, reload every mesh."""
        with self._lock:
            self._check_open()
            previous = {key: self._resources.get(key) for key in changes}
            self._write(changes)
            try:
                build_snapshot([str(self.config_dir)], options=self._options)
            except ConfigError:
                self._write(previous)
                raise
            for member in self._members.values():
                store = member.mesh.config_store
                store.reload()
                if store.last_error is not None:  # pragma: no cover - checked above
                    raise store.last_error

    def _write(self, changes: Mapping[tuple[str, str, str], str | None]) -> None:
        for key, text in changes.items():
            path = self.config_dir / (_FILE_UNSAFE.sub("_", ".".join(key)) + ".yaml")
            if text is None:
                path.unlink(missing_ok=True)
                self._resources.pop(key, None)
            else:
                path.write_text(text, encoding="utf-8")
                self._resources[key] = text

    def _blocking_portal(self) -> anyio.from_thread.BlockingPortal:
        """An event loop in a thread, where sync clients run ASGI apps."""
        with self._lock:
            self._check_open()
            if self._portal is None:
                cm = anyio.from_thread.start_blocking_portal()
                self._portal = cm.__enter__()
                self._portal_cm = cm
            return self._portal

    def _prepare(
        self,
        caller: _Member,
        destination: Hashable,
        tls: UpstreamTLS,
        request: httpcore.Request,
        body: bytes,
    ) -> _Prepared:
        """What calling the app at ``request``'s address takes; raises the connect errors."""
        url = request.url
        host = url.host.decode("ascii")
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        target = self._endpoints.get((host, port))
        if target is None or not target.up or target.mesh.closed:
            raise _refused(host, port, destination)
        peer: SpiffeId | None = None
        client_pem: str | None = None
        if tls.mode is UpstreamTLSMode.ISTIO_MUTUAL:
            peer = target.mesh.spiffe_id
            expected = tls.subject_alt_names
            if peer is None or (expected and peer.uri not in expected):
                raise _identity_mismatch(peer, expected, (host, port), destination)
            source = caller.mesh.certificates
            if source is not None:
                client_pem = source.current().cert_pem.decode("ascii")
        stream = _InProcessStream(peer, (host, port), (caller.address, _CLIENT_PORT))
        if target.asgi:
            message = _asgi_scope(request, tls, client_pem, stream)
        else:
            message = _wsgi_environ(request, tls, client_pem, stream, body)
        return _Prepared(target.app, target.asgi, message, body, stream)


@dataclass(slots=True)
class _Prepared:
    app: Any
    asgi: bool
    message: dict[str, Any]
    """The ASGI scope or the WSGI environ."""
    body: bytes
    stream: _InProcessStream


class _InProcessStream:
    """What the response says of its "connection": the server's verified SPIFFE ID."""

    __slots__ = ("client", "peer", "server")

    def __init__(
        self, peer: SpiffeId | None, server: tuple[str, int], client: tuple[str, int]
    ) -> None:
        self.peer = peer
        self.server = server
        self.client = client

    def get_extra_info(self, info: str) -> Any:
        if info == PEER_ID:
            return self.peer
        if info == "server_addr":
            return self.server
        if info == "client_addr":
            return self.client
        return None


# -- the connectors ---------------------------------------------------------------------


class _InProcessConnector:
    """The sync transport's connector: calls the app at the endpoint, in this process.

    ASGI apps run on the testbed's portal event loop; WSGI apps in a thread of
    their own, so that the request's read timeout (the mesh's per-try and
    route timeouts among them) holds as it would on a socket.
    """

    def __init__(self, testbed: MeshTestbed, caller: _Member) -> None:
        self._testbed = testbed
        self._caller = caller

    def exchange(
        self,
        destination: Hashable,
        tls: UpstreamTLS,
        request: httpcore.Request,
        limits: PoolLimits | None = None,
    ) -> httpcore.Response:
        body = b"".join(typing.cast("Iterable[bytes]", request.stream))
        prepared = self._testbed._prepare(self._caller, destination, tls, request, body)
        timeout = _read_timeout(request)
        raising = self._testbed.raise_app_exceptions
        if prepared.asgi:
            portal = self._testbed._blocking_portal()
            result = portal.call(_run_asgi, prepared, timeout, raising)
        else:
            result = _run_wsgi_in_thread(prepared, timeout, raising)
        return _response(result, prepared.stream)

    def close(self) -> None:
        """Nothing to close: there are no connections."""


class _AsyncInProcessConnector:
    """The async transport's connector: ASGI apps run in the caller's task, WSGI apps in a worker thread."""

    def __init__(self, testbed: MeshTestbed, caller: _Member) -> None:
        self._testbed = testbed
        self._caller = caller

    async def exchange(
        self,
        destination: Hashable,
        tls: UpstreamTLS,
        request: httpcore.Request,
        limits: PoolLimits | None = None,
    ) -> httpcore.Response:
        chunks = [c async for c in typing.cast("AsyncIterable[bytes]", request.stream)]
        body = b"".join(chunks)
        prepared = self._testbed._prepare(self._caller, destination, tls, request, body)
        timeout = _read_timeout(request)
        raising = self._testbed.raise_app_exceptions
        if prepared.asgi:
            result = await _run_asgi(prepared, timeout, raising)
        else:
            call = functools.partial(_run_wsgi, prepared, raising)
            try:
                with anyio.fail_after(timeout):
                    result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
            except TimeoutError:
                raise _read_timeout_error(timeout) from None
        return _response(result, prepared.stream)

    async def aclose(self) -> None:
        """Nothing to close: there are no connections."""


class _Passthrough(httpx.BaseTransport):
    """``ALLOW_ANY`` traffic (hosts outside the registry): to the app at the URL's address, in plain text."""

    def __init__(self, connector: _InProcessConnector) -> None:
        self._connector = connector

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = _passthrough_request(request, request.read())
        response = self._connector.exchange(("PassthroughCluster",), PLAINTEXT, core)
        return httpx.Response(
            response.status,
            headers=response.headers,
            content=response.read(),
            extensions=response.extensions,
        )


class _AsyncPassthrough(httpx.AsyncBaseTransport):
    """:class:`_Passthrough` for the async transport."""

    def __init__(self, connector: _AsyncInProcessConnector) -> None:
        self._connector = connector

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = _passthrough_request(request, await request.aread())
        response = await self._connector.exchange(("PassthroughCluster",), PLAINTEXT, core)
        return httpx.Response(
            response.status,
            headers=response.headers,
            content=await response.aread(),
            extensions=response.extensions,
        )


def _passthrough_request(request: httpx.Request, body: bytes) -> httpcore.Request:
    url = request.url
    return httpcore.Request(
        request.method,
        httpcore.URL(
            scheme=b"http",
            host=url.raw_host,
            port=url.port or (443 if url.scheme == "https" else 80),
            target=url.raw_path,
        ),
        headers=request.headers.raw,
        content=body,
        extensions=request.extensions,
    )


# -- calling the apps ---------------------------------------------------------------------

_Result = tuple[int, list[tuple[bytes, bytes]], bytes]


async def _run_asgi(prepared: _Prepared, timeout: float | None, raising: bool) -> _Result:
    """Call an ASGI app with one request; collect its whole response."""
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    request_sent = False
    complete = anyio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": prepared.body, "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status, headers
        kind = message["type"]
        if kind == "http.response.start":
            status = int(message["status"])
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
        elif kind == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                complete.set()

    try:
        with anyio.fail_after(timeout):
            await prepared.app(prepared.message, receive, send)
    except TimeoutError:
        raise _read_timeout_error(timeout) from None
    except Exception:
        if raising:
            raise
        log.exception("the app raised")
        if status is None:
            return _internal_error()
    finally:
        complete.set()
    if status is None:
        if raising:
            raise RuntimeError("the ASGI app returned without sending a response")
        return _internal_error()
    return status, headers, b"".join(chunks)


def _run_wsgi(prepared: _Prepared, raising: bool) -> _Result:
    """Call a WSGI app with one request; collect its whole response."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> typing.Callable[[bytes], object]:
        if exc_info is not None and started and chunks:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [(status, headers)]
        return chunks.append

    try:
        result = prepared.app(prepared.message, start_response)
        try:
            for chunk in result:
                if chunk:
                    chunks.append(bytes(chunk))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:
        if raising:
            raise
        log.exception("the app raised")
        if not started:
            return _internal_error()
    if not started:
        if raising:
            raise RuntimeError("the WSGI app returned without calling start_response")
        return _internal_error()
    line, raw_headers = started[0]
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in raw_headers]
    return int(line.split(" ", 1)[0]), headers, b"".join(chunks)


def _run_wsgi_in_thread(prepared: _Prepared, timeout: float | None, raising: bool) -> _Result:
    """:func:`_run_wsgi` in a thread of its own, abandoned after ``timeout`` seconds."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(_run_wsgi(prepared, raising))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="testbed-wsgi-app", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise _read_timeout_error(timeout)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return typing.cast("_Result", result)


def _internal_error() -> _Result:
    return 500, [(b"content-type", b"text/plain")], b"Internal Server Error"


def _response(result: _Result, stream: _InProcessStream) -> httpcore.Response:
    status, headers, body = result
    try:
        reason = http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    return httpcore.Response(
        status,
        headers=headers,
        content=body,
        extensions={
            "http_version": b"HTTP/1.1",
            "reason_phrase": reason,
            "network_stream": stream,
        },
    )


def _asgi_scope(
    request: httpcore.Request,
    tls: UpstreamTLS,
    client_pem: str | None,
    stream: _InProcessStream,
) -> dict[str, Any]:
    raw_path, _, query = request.url.target.partition(b"?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method.decode("ascii"),
        "scheme": "https" if tls.secure else "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers],
        "client": stream.client,
        "server": stream.server,
        "state": {},
    }
    if tls.secure:
        scope["extensions"] = {
            "tls": {
                "server_cert": None,
                "client_cert_chain": [client_pem] if client_pem else [],
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": 0x0304,
                "cipher_suite": None,
                "server_name": tls.sni,
            }
        }
    return scope


def _wsgi_environ(
    request: httpcore.Request,
    tls: UpstreamTLS,
    client_pem: str | None,
    stream: _InProcessStream,
    body: bytes,
) -> dict[str, Any]:
    target = request.url.target
    raw_path, _, query = target.partition(b"?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": target.decode("latin-1"),
        "REQUEST_URI": target.decode("latin-1"),
        "SERVER_NAME": stream.server[0],
        "SERVER_PORT": str(stream.server[1]),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": stream.client[0],
        "REMOTE_PORT": str(stream.client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if tls.secure else "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if tls.secure:
        environ["HTTPS"] = "on"
        if client_pem:
            environ["SSL_CLIENT_CERT"] = client_pem  # read with trust_front_server=True
    return environ


# -- helpers --------------------------------------------------------------------------------


def _address(n: int) -> str:
    """The ``n``-th fake endpoint address: 10.0.0.1, 10.0.0.2, ..., 10.0.1.1, ..."""
    return f"10.0.{n // 250}.{n % 250 + 1}"


def _is_asgi(app: Any) -> bool:
    from .inbound.serve import is_asgi

    return is_asgi(app)


def _read_timeout(request: httpcore.Request) -> float | None:
    timeouts = request.extensions.get("timeout") or {}
    value = timeouts.get("read")
    return None if value is None else float(value)


def _read_timeout_error(timeout: float | None) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(f"the app did not answer within {timeout} s")


def _refused(host: str, port: int, destination: Hashable) -> UpstreamConnectError:
    """What the real connector raises for a refused connection (Envoy: ``delayed connect error: 111``)."""
    cause = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    error = UpstreamConnectError(
        f"cannot connect to {host}:{port}: [Errno {errno.ECONNREFUSED}] Connection refused",
        endpoint=(host, port),
        destination=destination,
    )
    error.__cause__ = cause
    return error


def _identity_mismatch(
    peer: SpiffeId | None,
    expected: frozenset[str],
    endpoint: tuple[str, int],
    destination: Hashable,
) -> UpstreamIdentityError:
    listed = sorted(expected)
    problem = f"presented SPIFFE ID {peer.uri}" if peer is not None else "presented no certificate"
    wanted = f"expected one of [{', '.join(listed)}]" if listed else "expected a SPIFFE ID"
    return UpstreamIdentityError(
        f"the server at {endpoint[0]}:{endpoint[1]} {problem}; {wanted}",
        endpoint=endpoint,
        destination=destination,
        peer=peer.uri if peer is not None else None,
        expected=tuple(listed),
    )


def _documents(resource: str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of one :meth:`MeshTestbed.apply` argument (``List`` kinds expanded)."""
    if isinstance(resource, str):
        try:
            docs = [d for d in yaml.safe_load_all(resource) if d is not None]
        except yaml.YAMLError as exc:
            raise ValueError(f"not YAML: {exc}") from exc
    else:
        docs = [dict(resource)]
    out: list[dict[str, Any]] = []
    while docs:
        doc = docs.pop(0)
        if not isinstance(doc, dict):
            raise ValueError(f"a resource must be a mapping, got {type(doc).__name__}")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            docs[:0] = doc["items"]
            continue
        out.append(doc)
    return out


def _resource_key(item: Mapping[str, Any]) -> tuple[str, str, str]:
    kind = item.get("kind")
    metadata = item.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(kind, str) or not isinstance(name, str) or not kind or not name:
        raise ValueError("every resource needs a kind and a metadata.name")
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return kind, namespace if isinstance(namespace, str) and namespace else "default", name
