"""Authorization decisions per second with 1, 100 and 10,000 policies in the mesh.

About 1% of the policies apply to the workload (at least one), spread the way a
real mesh spreads them: selector policies in the workload's namespace,
namespace-wide ones, and root-namespace policies with a selector; the rest
live in other namespaces or select other workloads. The applying policies are
ALLOW rules for one caller principal or one calling namespace each, DENY rules
for unwanted principals, and ALLOW rules with a header condition.

The typical request: mTLS from ``cluster.local/ns/clients/sa/client-0``,
``GET /api/0/items?page=2`` with a few headers; it is allowed by the first
applying policy.

    python benchmarks/authz.py [--runs 7] [--number 100000]

Prints, per mesh size: load + compile time, microseconds per decision
(``evaluate`` on a built request) and per request end to end (normalize the
path, build the request from an ASGI scope, evaluate), as medians over the
runs, and the 10,000-vs-1 ratio (target: within 1.5x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
from typing import Any

from inmesh.config.load import load_text
from inmesh.identity.spiffe import SpiffeId
from inmesh.model import Workload
from inmesh.policy.authz import AuthorizationEngine, AuthzEvaluator, AuthzRequest
from inmesh.policy.normalize import asgi_request_target, normalize_path

ROOT = "istio-system"
NS = "bench"
WORKLOAD = Workload("target", NS, service_account="target", labels={"app": "target", "v": "1"})
SIZES = (1, 100, 10_000)


def _policy(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def _applying(j: int) -> str:
    """The j-th policy that applies to the workload."""
    kind = j % 10
    if kind <= 5:  # selector policy in the workload's namespace: one caller
        return _policy(
            f"allow-client-{j}",
            NS,
            {
                "selector": {"matchLabels": {"app": "target"}},
                "rules": [
                    {
                        "from": [{"source": {"principals": [f"cluster.local/ns/clients/sa/client-{j}"]}}],
                        "to": [{"operation": {"methods": ["GET", "POST"], "paths": [f"/api/{j}/*"]}}],
                    }
                ],
            },
        )  # fmt: skip
    if kind <= 7:  # namespace-wide: one calling namespace
        return _policy(
            f"allow-team-{j}",
            NS,
            {
                "rules": [
                    {
                        "from": [{"source": {"namespaces": [f"team-{j}"]}}],
                        "to": [{"operation": {"paths": [f"/team/{j}/{{*}}"]}}],
                    }
                ]
            },
        )
    if kind == 8:  # root namespace, selector: keep someone out everywhere
        return _policy(
            f"deny-evil-{j}",
            ROOT,
            {
                "selector": {"matchLabels": {"app": "target"}},
                "action": "DENY",
                "rules": [
                    {"from": [{"source": {"principals": [f"cluster.local/ns/evil/sa/e-{j}"]}}]}
                ],
            },
        )
    return _policy(  # ALLOW with a header condition
        f"allow-flagged-{j}",
        NS,
        {
            "selector": {"matchLabels": {"app": "target"}},
            "rules": [
                {
                    "from": [{"source": {"principals": [f"cluster.local/ns/flags/sa/f-{j}"]}}],
                    "when": [{"key": "request.headers[x-flag]", "values": [f"on-{j}"]}],
                }
            ],
        },
    )


def _elsewhere(i: int) -> str:
    """A policy that does not apply to the workload."""
    spec = {
        "rules": [
            {
                "from": [{"source": {"principals": [f"cluster.local/ns/x/sa/c-{i}"]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": [f"/v{i}/*"]}}],
            }
        ]
    }
    where = i % 3
    if where == 0:  # another namespace
        return _policy(f"p-{i}", f"ns-{i % 50}", spec)
    spec["selector"] = {"matchLabels": {"app": f"other-{i}"}}
    if where == 1:  # the workload's namespace, another workload
        return _policy(f"p-{i}", NS, spec)
    return _policy(f"p-{i}", ROOT, spec)  # root namespace, another workload


def mesh_yaml(total: int) -> tuple[str, int]:
    applying = max(1, total // 100)
    docs = [_applying(j) for j in range(applying)]
    docs += [_elsewhere(i) for i in range(total - applying)]
    return "\n---\n".join(docs), applying


SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/api/0/items",
    "raw_path": b"/api/0/items",
    "query_string": b"page=2",
    "headers": [
        (b"host", b"target.bench:8080"),
        (b"user-agent", b"python-httpx/0.27"),
        (b"accept", b"*/*"),
        (b"x-request-id", b"2f1c6e0a-8d6b-4b7e-9c55-0d5f7c1b9a10"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ],
    "client": ("10.1.2.3", 50123),
    "server": ("10.0.0.5", 8080),
}
PEER = SpiffeId.for_workload("clients", "client-0")


def end_to_end(ev: AuthzEvaluator) -> bool:
    normalized = normalize_path(asgi_request_target(SCOPE))
    request = AuthzRequest.from_asgi(SCOPE, peer=PEER, path=normalized)
    return ev.evaluate(request).allowed


def measure(total: int, runs: int, number: int) -> dict[str, float]:
    text, applying = mesh_yaml(total)
    t0 = time.perf_counter()
    result = load_text(text)
    if result.errors:
        raise SystemExit(f"invalid benchmark policies: {result.errors[0]}")
    t1 = time.perf_counter()
    ev = AuthorizationEngine.compile(result.resources, WORKLOAD, root_namespace=ROOT)
    t2 = time.perf_counter()
    assert len(ev.policies) == applying, (len(ev.policies), applying)
    request = AuthzRequest.from_asgi(SCOPE, peer=PEER, path=normalize_path(b"/api/0/items?page=2"))
    decision = ev.evaluate(request)
    assert decision.allowed and decision.policy_id == "ns[bench]-policy[allow-client-0]-rule[0]"
    assert end_to_end(ev)
    evaluate = ev.evaluate
    decide = statistics.median(
        t / number for t in timeit.repeat(lambda: evaluate(request), number=number, repeat=runs)
    )
    full_number = max(1, number // 4)
    full = statistics.median(
        t / full_number
        for t in timeit.repeat(lambda: end_to_end(ev), number=full_number, repeat=runs)
    )
    return {
        "policies": total,
        "applying": applying,
        "load_s": t1 - t0,
        "compile_ms": (t2 - t1) * 1000,
        "decide_us": decide * 1e6,
        "full_us": full * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args(argv)
    print("$ python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(f"python {sys.version.split()[0]}, median of {args.runs} runs x {args.number} decisions")
    rows = [measure(n, args.runs, args.number) for n in SIZES]
    print()
    print("| policies in mesh | applying | load YAML | compile | µs/decision | decisions/s "
          "| µs/request end to end |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['policies']:,} | {r['applying']:,} | {r['load_s']:.2f} s "
            f"| {r['compile_ms']:.1f} ms | {r['decide_us']:.2f} | {1e6 / r['decide_us']:,.0f} "
            f"| {r['full_us']:.2f} |"
        )
    ratio = rows[-1]["decide_us"] / rows[0]["decide_us"]
    ratio_full = rows[-1]["full_us"] / rows[0]["full_us"]
    print()
    print(
        f"ratio 10,000 vs 1 policies: {ratio:.2f}x per decision, {ratio_full:.2f}x end to end "
        f"(target <= 1.5x): {'OK' if ratio <= 1.5 else 'OVER TARGET'}"
    )
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
