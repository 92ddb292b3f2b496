"""Load, validate and compile a large mesh configuration.

1,000 VirtualServices, 1,000 DestinationRules and 1,000 ServiceEntries with 10
endpoints each, written as files into a temporary directory, then loaded the
way a Mesh loads them: parse YAML, check with Istio's rules, build the
snapshot and the service registry. Each run happens in a fresh subprocess so
that peak memory is the load's own.

    python benchmarks/config_load.py [--runs 5] [--services 1000]

Prints seconds (median and range over the runs) and the peak RSS increase
over the interpreter with inmesh imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc{i}
  namespace: ns{ns}
spec:
  hosts: [svc{i}.ns{ns}.svc.cluster.local]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: svc{i}.ns{ns}.svc.cluster.local, subset: v2}}
  - route:
    - destination: {{host: svc{i}.ns{ns}.svc.cluster.local, subset: v1}}
      weight: 90
    - destination: {{host: svc{i}.ns{ns}.svc.cluster.local, subset: v2}}
      weight: 10
    timeout: 500ms
    retries: {{attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,reset"}}
"""

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc{i}
  namespace: ns{ns}
spec:
  host: svc{i}.ns{ns}.svc.cluster.local
  trafficPolicy:
    loadBalancer: {{simple: LEAST_REQUEST}}
    connectionPool:
      tcp: {{maxConnections: 100}}
      http: {{http1MaxPendingRequests: 10, maxRequestsPerConnection: 10}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
"""

SE_HEAD = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc{i}
  namespace: ns{ns}
spec:
  hosts: [svc{i}.ns{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
"""
SE_ENDPOINT = """\
  - address: 10.{a}.{b}.{c}
    labels: {{app: svc{i}, version: v{v}}}
    serviceAccount: svc{i}
"""


def write_config(root: Path, services: int) -> None:
    per_file = 100
    for kind, template in (("vs", VS), ("dr", DR), ("se", None)):
        for start in range(0, services, per_file):
            docs = []
            for i in range(start, min(start + per_file, services)):
                ns = i % 20
                if template is not None:
                    docs.append(template.format(i=i, ns=ns))
                else:
                    body = SE_HEAD.format(i=i, ns=ns)
                    for e in range(10):
                        n = i * 10 + e
                        body += SE_ENDPOINT.format(
                            a=n >> 16, b=(n >> 8) & 255, c=n & 255, i=i, v=1 + e % 2
                        )
                    docs.append(body)
            (root / f"{kind}-{start:05d}.yaml").write_text("---\n".join(docs))


CHILD = r"""
import gc, json, resource, sys, time
import inmesh.config.snapshot as snapshot_mod
from inmesh.discovery.registry import Registry
from inmesh.config.snapshot import build_snapshot
gc.collect()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
snap = build_snapshot([sys.argv[1]])
t1 = time.perf_counter()
reg = Registry.build(snap.of_kind("ServiceEntry"), snap.of_kind("WorkloadEntry"))
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"load_validate": t1 - t0, "registry": t2 - t1, "total": t2 - t0,
                  "resources": len(snap), "peak_mb": (peak - base) / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--services", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_config(root, args.services)
        size = sum(p.stat().st_size for p in root.iterdir())
        lines = sum(p.read_text().count("\n") for p in root.iterdir())
        results = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(root)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ},
            )
            results.append(json.loads(out.stdout))
    total = [r["total"] for r in results]
    print(
        f"config: {args.services} VS + {args.services} DR + {args.services} SE x 10 endpoints "
        f"= {results[0]['resources']} resources, {lines} lines, {size / 1e6:.1f} MB of YAML"
    )
    for key in ("load_validate", "registry", "total"):
        vals = [r[key] for r in results]
        print(
            f"{key:>14}: median {statistics.median(vals):.3f} s  "
            f"(min {min(vals):.3f}, max {max(vals):.3f}, {len(vals)} runs)"
        )
    peaks = [r["peak_mb"] for r in results]
    print(f"{'peak RSS +':>14}: median {statistics.median(peaks):.0f} MB (max {max(peaks):.0f})")
    print(
        f"verdict: {'OK' if statistics.median(total) < 2 and max(peaks) < 100 else 'OVER TARGET'} "
        "(target: < 2 s, < 100 MB)"
    )


if __name__ == "__main__":
    main()
