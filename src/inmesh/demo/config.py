"""The demo's mesh configuration: the seed's resources, and where the instances run.

The resources are ``examples/mesh/`` (the seed's six files, their conflicts
resolved the way Istio merges them) with one change: outlier detection's
``interval`` and ``baseEjectionTime`` are shortened (10 s and 30 s in the
seed) so that an ejected instance comes back while the demo watches.
``tests/e2e/test_demo.py`` checks that the two stay the same otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BASE_EJECTION_TIME",
    "OUTLIER_INTERVAL",
    "RESOURCES",
    "SERVICE_PORTS",
    "Endpoint",
    "services_yaml",
    "write_resources",
]

OUTLIER_INTERVAL = "500ms"
"""The seed says 10s."""

BASE_EJECTION_TIME = "2s"
"""The seed says 30s."""

RESOURCES: dict[str, str] = {
    "01-peer-authentication-strict.yaml": """\
# From the seed: STRICT mTLS for every workload in namespace "default".
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: STRICT
""",
    "02-authz-allow-frontend-to-backend.yaml": """\
# From the seed: only the frontend's service account may call the backend.
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend-to-backend
  namespace: default
spec:
  selector:
    matchLabels:
      app: backend
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/frontend-sa"]
""",
    "03-virtualservice-retries-timeout.yaml": """\
# From the seed: up to 3 retries, 100ms per try, 500ms in all; and the seed's
# 06 canary route, 90% to subset v1 and 10% to v2 (one VirtualService per
# host: see examples/mesh/).
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: backend
  namespace: default
spec:
  hosts:
  - backend
  http:
  - route:
    - destination:
        host: backend
        subset: v1
        port:
          number: 8080
      weight: 90
    - destination:
        host: backend
        subset: v2
        port:
          number: 8080
      weight: 10
    retries:
      attempts: 3
      perTryTimeout: 100ms
    timeout: 500ms
""",
    "05-destinationrule-circuit-breaking.yaml": f"""\
# From the seed: connection-pool limits and outlier ejection, plus the seed's
# 04 load balancer. The demo shortens interval (10s) and baseEjectionTime (30s).
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: backend
  namespace: default
spec:
  host: backend
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 10
        maxRequestsPerConnection: 10
    outlierDetection:
      consecutive5xxErrors: 5
      interval: {OUTLIER_INTERVAL}
      baseEjectionTime: {BASE_EJECTION_TIME}
      maxEjectionPercent: 50
""",
    "06-canary-90-10.yaml": """\
# From the seed: subsets by version label, merged by Istio into the
# DestinationRule "backend" (05), whose trafficPolicy applies to them.
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: backend-canary
  namespace: default
spec:
  host: backend
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
""",
}


@dataclass(frozen=True)
class Endpoint:
    """One running instance, as a WorkloadEntry describes it."""

    name: str
    app: str
    version: str
    service_account: str
    port: int


_SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {app}
  namespace: default
spec:
  hosts: [{app}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: {port}, name: http, protocol: HTTP}}
  workloadSelector:
    labels: {{app: {app}}}
"""

_WORKLOAD_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: {app}, version: {version}}}
  serviceAccount: {service_account}
"""

SERVICE_PORTS = {"backend": 8080, "frontend": 3000}
"""The seed's service ports: what callers write in URLs."""


def services_yaml(endpoints: Sequence[Endpoint]) -> str:
    """ServiceEntries for backend and frontend, and a WorkloadEntry per instance."""
    docs = ["# Where the demo's instances listen (ports chosen at start).\n"]
    docs += [_SERVICE_ENTRY.format(app=app, port=port) for app, port in SERVICE_PORTS.items()]
    docs += [
        _WORKLOAD_ENTRY.format(
            name=e.name,
            app=e.app,
            version=e.version,
            service_account=e.service_account,
            port=e.port,
        )
        for e in endpoints
    ]
    return docs[0] + "---\n".join(docs[1:])


def write_resources(directory: Path) -> list[Path]:
    """Write :data:`RESOURCES` into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in RESOURCES.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
