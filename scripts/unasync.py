#!/usr/bin/env python3
"""Generate the sync outbound code and tests from their async sources.

    python3 scripts/unasync.py           # write src/inmesh/outbound/_sync, tests/outbound/_sync
    python3 scripts/unasync.py --check   # exit 1 if they are stale or a rule went unused

Each rule is a regular expression anchored on word boundaries, applied line
by line in order; a line the rules empty (a removed decorator) is dropped.
Every rule must be used somewhere, so the table cannot rot. Generated files
are compared whole (missing, stale and left-over files all count).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = (
    ("src/inmesh/outbound/_async", "src/inmesh/outbound/_sync"),
    ("tests/outbound/_async", "tests/outbound/_sync"),
)
RULES = (
    (r"\(async source\)", "(generated from the _async twin by scripts/unasync.py: do not edit)"),
    (r"^\s*@pytest\.mark\.anyio\n", ""),
    (r"\bhttpx\.AsyncByteStream\b", "httpx.SyncByteStream"),
    (r"\bsleep_async\b", "sleep_sync"),
    (r"\basync_transport\b", "transport"),
    (r"\b__anext__\b", "__next__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"(?<![A-Za-z0-9])Async(?=[A-Z])", ""),  # AsyncConnector, _AsyncMappedStream, httpcore.AsyncX
    (r"\._async\.", "._sync."),
    (r"\bAnyIOBackend\b", "SyncBackend"),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\bhandle_async_request\b", "handle_request"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
)
COMPILED = [(re.compile(pattern), repl) for pattern, repl in RULES]


def unasync_text(text: str, used: set[int]) -> str:
    """The sync version of a source file; records the rules that changed something."""
    out = []
    for line in text.splitlines(keepends=True):
        new = line
        for index, (regex, repl) in enumerate(COMPILED):
            new, count = regex.subn(repl, new)
            if count:
                used.add(index)
        if new or not line:
            out.append(new)
    return "".join(out)


def expected_files(used: set[int]) -> dict[Path, str]:
    """Every generated path and its content."""
    files: dict[Path, str] = {}
    for src, dst in PAIRS:
        for path in sorted((ROOT / src).rglob("*.py")):
            target = ROOT / dst / path.relative_to(ROOT / src)
            files[target] = unasync_text(path.read_text(encoding="utf-8"), used)
    return files


def main(argv: list[str]) -> int:
    """Generate, or with ``--check`` verify; 0 on success, 1 on any difference."""
    check = "--check" in argv
    used: set[int] = set()
    files = expected_files(used)
    problems: list[str] = []
    for path, content in files.items():
        rel = path.relative_to(ROOT)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        if check:
            problems.append(f"{rel}: {'missing' if current is None else 'out of date'}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            print(f"wrote {rel}")
    for _, dst in PAIRS:
        for path in sorted((ROOT / dst).rglob("*.py")):
            if path not in files:
                if check:
                    problems.append(f"{path.relative_to(ROOT)}: has no async source")
                else:
                    path.unlink()
                    print(f"removed {path.relative_to(ROOT)}")
    unused = [RULES[i][0] for i in range(len(RULES)) if i not in used]
    problems += [f"rule never used: {pattern!r}" for pattern in unused]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems and check:
        print("run: python3 scripts/unasync.py", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
