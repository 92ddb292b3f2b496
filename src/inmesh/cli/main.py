"""``inmesh``: entry point. Each sub-command lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``.

Exit codes: 0 success, 1 the command found problems (invalid config, failed
check), 2 usage errors (argparse's own convention).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Modules that contribute sub-commands, in the order `inmesh --help` lists them.
_COMMAND_MODULES = (
    "inmesh.cli.validate",
    "inmesh.cli.certs",
    "inmesh.cli.serve",
    "inmesh.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    from inmesh import __version__

    parser = argparse.ArgumentParser(
        prog="inmesh",
        description="A service mesh inside the process: Istio's YAML, Envoy's semantics, no sidecar.",
    )
    parser.add_argument("--version", action="version", version=f"inmesh {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the inmesh.* loggers written to stderr (default: WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
