"""``inmesh serve MODULE:APP``: serve an ASGI or WSGI app with the mesh's inbound side.

::

    inmesh serve app:app --port 8080 --config mesh/ --workload backend \\
        --service-account backend-sa --labels app=backend,version=v1 \\
        --cert-dir /var/run/secrets/workload-spiffe-credentials

mTLS follows the PeerAuthentication in force for the workload and port (STRICT:
TLS with client certificates required; PERMISSIVE: TLS and plaintext on the
same port; DISABLE: plaintext), as :mod:`inmesh.inbound.serve` describes;
``--mode`` overrides it. The configuration files and the certificate
directory are watched: changes apply to new connections. Stops gracefully on
SIGINT/SIGTERM.

With ``--factory``, ``MODULE:APP`` is called with the serving
:class:`~inmesh.Mesh` and returns the app, so the app's outbound calls go
through the same mesh (one configuration watcher, one identity, one set of
metrics)::

    def create_app(mesh):
        client = httpx.AsyncClient(transport=mesh.async_transport())
        ...
        return app

Once listening it prints ``inmesh: serving MODULE:APP on HOST:PORT
(PeerAuthentication MODE)`` on stderr (with ``--port 0``, the port chosen).

Exit status: 0 after a clean stop (SIGTERM included; SIGINT gives 130), 1 when the app, the configuration or the
certificates cannot be loaded or the port cannot be bound, 2 for usage errors.

Runnable alone as ``python -m inmesh.cli.serve ...`` (same arguments).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inmesh.identity.sources import CertificateSource
    from inmesh.identity.spiffe import SpiffeId
    from inmesh.inbound.context import InboundContext
    from inmesh.model import Workload
    from inmesh.policy.authz import AuthzEvaluator
    from inmesh.policy.peer_authn import MtlsMode

__all__ = ["context_from_args", "load_app", "main", "register"]

_MODES = ("STRICT", "PERMISSIVE", "DISABLE")


def register(sub: Any) -> None:
    """Add the ``serve`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "serve",
        help="serve an ASGI or WSGI app with mTLS per PeerAuthentication",
        description=(
            "Serve MODULE:APP (ASGI or WSGI) with the mesh's inbound side: SPIFFE mTLS per "
            "PeerAuthentication (STRICT, PERMISSIVE on one port, DISABLE), the peer identity "
            "and x-forwarded-client-cert given to the app as an Istio sidecar would."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` options, on any parser."""
    p.add_argument("app", metavar="MODULE:APP", help="the app to import, e.g. 'myapp.main:app'")
    p.add_argument(
        "--factory",
        action="store_true",
        help="MODULE:APP is a function taking the serving Mesh and returning the app "
        "(so the app's outbound calls use the same mesh: mesh.async_transport())",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8080, help="port to bind; 0 picks one (default: 8080)"
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="PATH",
        help="Istio YAML file or directory (repeatable; watched for changes)",
    )
    p.add_argument("--workload", required=True, metavar="NAME", help="this workload's name")
    p.add_argument(
        "--namespace", default="default", metavar="NS", help="its namespace (default: default)"
    )
    p.add_argument(
        "--service-account",
        default="default",
        metavar="SA",
        help="its service account (default: default)",
    )
    p.add_argument(
        "--labels", default="", metavar="K=V,...", help="its labels, e.g. app=backend,version=v1"
    )
    p.add_argument(
        "--cert-dir",
        metavar="DIR",
        help="directory with cert-chain.pem, key.pem, root-cert.pem (watched for rotation); "
        "without it the workload has no identity and serves plaintext only",
    )
    p.add_argument(
        "--trust-domain",
        default="cluster.local",
        metavar="TD",
        help="SPIFFE trust domain (default: cluster.local)",
    )
    p.add_argument(
        "--root-namespace",
        default="istio-system",
        metavar="NS",
        help="Istio's root namespace for mesh-wide policies (default: istio-system)",
    )
    p.add_argument(
        "--mode",
        choices=_MODES,
        type=str.upper,
        help="force this mTLS mode instead of the PeerAuthentication in force",
    )
    p.add_argument(
        "--interface",
        choices=("auto", "asgi", "wsgi"),
        default="auto",
        help="the app's interface (default: guess)",
    )
    p.add_argument(
        "--trust-xfcc",
        action="store_true",
        help="keep an incoming x-forwarded-client-cert on mTLS connections and append to it "
        "(only behind a trusted proxy)",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        metavar="N",
        help="serve the admin endpoint (/stats/prometheus, /config_dump, /clusters, /certs, "
        "/ready) on 127.0.0.1:N (0 picks a port; off by default)",
    )
    p.add_argument(
        "--access-log",
        choices=("text", "json"),
        help="write Istio-format access logs (text or JSON) to stderr (off by default)",
    )
    p.add_argument(
        "--cluster-id",
        default="Kubernetes",
        metavar="ID",
        help="cluster name in metrics (source_cluster/destination_cluster; default: Kubernetes)",
    )
    p.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="directory added to sys.path to import the app (default: .)",
    )


@dataclass(frozen=True)
class _ModeOverride:
    """An :class:`InboundContext` forcing one mTLS mode on every port."""

    inner: InboundContext
    mode: MtlsMode

    @property
    def workload(self) -> Workload:
        return self.inner.workload

    @property
    def certificates(self) -> CertificateSource | None:
        return self.inner.certificates

    def local_identity(self) -> SpiffeId | None:
        return self.inner.local_identity()

    def mtls_mode(self, port: int | None) -> MtlsMode:
        return self.mode

    @property
    def trusted_proxy_xfcc(self) -> bool:
        return self.inner.trusted_proxy_xfcc

    def authorizer(self) -> AuthzEvaluator | None:
        return self.inner.authorizer()

    @property
    def path_normalization(self) -> str:
        return self.inner.path_normalization

    @property
    def telemetry(self) -> Any:
        return getattr(self.inner, "telemetry", None)

    @property
    def deadline_propagation(self) -> bool:
        return bool(getattr(self.inner, "deadline_propagation", True))


def context_from_args(args: argparse.Namespace) -> tuple[InboundContext, Callable[[], None]]:
    """The mesh context the command serves with, and the function that closes it.

    Built with :class:`inmesh.Mesh` (configuration watched, certificates from
    ``--cert-dir`` rotated); ``--mode`` wraps it to force a mode.
    Raises :class:`~inmesh.errors.InmeshError` (invalid config, unusable
    certificate) or :class:`ValueError` (bad labels/names).
    """
    from inmesh.mesh import Mesh
    from inmesh.model import Workload
    from inmesh.policy.peer_authn import MtlsMode

    workload = Workload(
        args.workload,
        namespace=args.namespace,
        service_account=args.service_account,
        labels=Workload.parse_labels(args.labels),
    )
    mesh = Mesh(
        args.config,
        workload=workload,
        cert_dir=args.cert_dir,
        trust_domain=args.trust_domain,
        root_namespace=args.root_namespace,
        default_namespace=args.namespace,
        trust_forwarded_client_cert=args.trust_xfcc,
        admin_port=getattr(args, "admin_port", None),
        access_log=getattr(args, "access_log", None),
        cluster_id=getattr(args, "cluster_id", "Kubernetes"),
    )
    context: InboundContext = mesh
    if args.mode:
        context = _ModeOverride(mesh, MtlsMode(args.mode))
    return context, mesh.close


def load_app(spec: str, app_dir: str = ".") -> Any:
    """Import ``"module:attr"`` (``attr`` may be dotted); ``app_dir`` goes first on ``sys.path``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"the app must be given as MODULE:APP, not {spec!r}")
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def run(args: argparse.Namespace) -> int:
    """The ``serve`` command."""
    from inmesh.errors import InmeshError
    from inmesh.inbound.serve import MeshServer, ServeError

    factory = bool(getattr(args, "factory", False))
    try:
        app = load_app(args.app, args.app_dir)
    except (ImportError, ValueError) as exc:
        print(f"inmesh serve: cannot load {args.app}: {exc}", file=sys.stderr)
        return 1
    if factory and not callable(app):
        print(f"inmesh serve: --factory: {args.app} is not callable", file=sys.stderr)
        return 1
    try:
        context, close = context_from_args(args)
    except (InmeshError, ValueError, OSError) as exc:
        print(f"inmesh serve: {exc}", file=sys.stderr)
        return 1
    if factory:
        try:
            app = app(getattr(context, "inner", context))  # the Mesh, also under --mode
        except Exception as exc:
            close()
            print(f"inmesh serve: {args.app}(mesh) failed: {exc!r}", file=sys.stderr)
            return 1

    if getattr(args, "access_log", None):
        _log_access_to_stderr()
    admin = getattr(getattr(context, "inner", context), "admin_address", None)

    def announce(server: MeshServer) -> None:
        mode = context.mtls_mode(server.port).value
        print(
            f"inmesh: serving {args.app} on {server.host}:{server.port} (PeerAuthentication {mode})",
            file=sys.stderr,
            flush=True,
        )
        if admin is not None:
            print(
                f"inmesh: admin endpoint on http://{admin[0]}:{admin[1]}/",
                file=sys.stderr,
                flush=True,
            )

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        MeshServer(
            app,
            context,
            args.host,
            args.port,
            interface=args.interface,
            on_started=announce,
        ).run()
    except _TerminatedError:
        pass  # graceful shutdown done; uvicorn re-raised SIGTERM to us
    except ServeError as exc:
        print(f"inmesh serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        close()
    return 0


def _log_access_to_stderr() -> None:
    """Access log lines to stderr whatever ``--log-level`` says (they are what was asked for)."""
    from inmesh.telemetry import ACCESS_LOGGER

    access = logging.getLogger(ACCESS_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


class _TerminatedError(Exception):
    """SIGTERM, after uvicorn's graceful shutdown (it re-raises the signal it caught)."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inmesh.cli.serve``: the ``serve`` command alone."""
    parser = argparse.ArgumentParser(prog="inmesh serve", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
