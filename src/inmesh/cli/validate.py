"""``inmesh validate`` and ``inmesh config dump``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inmesh.errors import Diagnostic, Severity

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check Istio YAML as Istio would, with file, line and field path",
        description=(
            "Check VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, "
            "PeerAuthentication and AuthorizationPolicy resources with Istio's rules. "
            "Other kinds are skipped. Exit status 1 if any error is found."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (recursive)")
    _common_options(p)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="output format")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.set_defaults(func=_validate)

    cfg = sub.add_parser("config", help="inspect the effective configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    d = cfg_sub.add_parser(
        "dump",
        help="print the effective snapshot, defaults filled in",
        description=(
            "Load and check PATHs, then print every resource as inmesh reads it, "
            "with Istio's defaults filled in, as a Kubernetes List."
        ),
    )
    d.add_argument("paths", nargs="+", metavar="PATH")
    _common_options(d)
    d.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    d.add_argument("--no-defaults", action="store_true", help="print only what the files set")
    d.set_defaults(func=_dump)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace of resources that do not name one (default: default)",
    )
    p.add_argument(
        "--root-namespace",
        default="istio-system",
        help="Istio's root namespace for mesh-wide policies (default: istio-system)",
    )


def _options(args: argparse.Namespace) -> Any:
    from inmesh.config.snapshot import ConfigOptions

    return ConfigOptions(default_namespace=args.namespace, root_namespace=args.root_namespace)


def _validate(args: argparse.Namespace) -> int:
    from inmesh.config.load import load_paths, sorted_diagnostics

    # Like `istioctl validate`, judge each resource on its own: the same name in
    # two files is a warning here (a mesh loading both would reject it).
    result = load_paths(args.paths, default_namespace=args.namespace, duplicates=Severity.WARNING)
    diags = sorted_diagnostics(result.diagnostics)
    errors = [d for d in diags if d.severity is Severity.ERROR]
    warnings = [d for d in diags if d.severity is Severity.WARNING]
    if args.output == "json":
        doc = {
            "valid": not errors,
            "resources": len(result.resources),
            "files": [name for name, _ in result.files],
            "errors": [d.to_dict() for d in errors],
            "warnings": [d.to_dict() for d in warnings],
            "infos": [d.to_dict() for d in diags if d.severity is Severity.INFO],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1 if errors else 0
    out = sys.stdout
    for d in diags:
        if args.quiet and d.severity is not Severity.ERROR:
            continue
        out.write(_line(d) + "\n")
    files = len(result.files)
    summary = (
        f"{len(errors)} error{'s' * (len(errors) != 1)}, "
        f"{len(warnings)} warning{'s' * (len(warnings) != 1)}; "
        f"{len(result.resources)} valid resource{'s' * (len(result.resources) != 1)} "
        f"in {files} file{'s' * (files != 1)}"
    )
    (sys.stderr if errors else out).write(summary + "\n")
    return 1 if errors else 0


def _line(d: Diagnostic) -> str:
    return f"{d.severity.value}: {d}"


def _dump(args: argparse.Namespace) -> int:
    import yaml

    from inmesh.config.dump import snapshot_to_data
    from inmesh.config.snapshot import build_snapshot
    from inmesh.errors import ConfigError

    try:
        snapshot = build_snapshot(list(args.paths), options=_options(args))
    except ConfigError as exc:
        for d in exc.errors:
            sys.stderr.write(_line(d) + "\n")
        sys.stderr.write(f"{len(exc.errors)} error(s); nothing dumped\n")
        return 1
    data = snapshot_to_data(snapshot, fill_defaults=not args.no_defaults)
    if args.output == "json":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        yaml.safe_dump(data, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0
