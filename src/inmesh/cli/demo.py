"""``inmesh demo``: the seed's frontend and backend in a mesh, on this machine.

Creates a throw-away CA and certificates, writes the seed's mesh
configuration, starts backend v1 (twice) and v2 and the frontend as real
``inmesh serve`` processes with STRICT mTLS, and shows identities, the 403 of
a caller with the wrong service account, the 90/10 canary split, retries,
outlier ejection and (when available) metrics; then stops everything and
removes the temporary directory. ``--keep-running`` leaves the services up
until Ctrl-C. See docs/demo.md.

Exit status: 0 done (also after Ctrl-C with ``--keep-running``), 1 a step
failed (the message says which and shows the end of the service's log), 130
interrupted.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``demo`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "demo",
        help="run the seed's frontend and backend in a mesh on this machine (~20 s)",
        description=(
            "Start the seed's frontend and backend as real processes with a throw-away CA, "
            "STRICT mTLS and the seed's Istio YAML, and show what the mesh does: SPIFFE "
            "identities, authorization (403), the 90/10 canary split, retries, outlier "
            "ejection, metrics. Everything is stopped and removed at the end."
        ),
    )
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the services up afterwards and print their URLs, until Ctrl-C",
    )
    p.add_argument(
        "--requests",
        type=_positive,
        default=200,
        metavar="N",
        help="requests that measure the canary split (default: 200)",
    )
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 10:
        raise argparse.ArgumentTypeError("at least 10 requests")
    return value


def run(args: argparse.Namespace) -> int:
    """The ``demo`` command."""
    from inmesh.demo.run import run_demo

    return run_demo(keep_running=args.keep_running, requests=args.requests)
