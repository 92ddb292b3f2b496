"""The documentation: the site builds in strict mode, and its snippets work.

Every fenced block of ``docs/*.md`` and ``README.md`` is exercised:

* ``python``: run page by page, in order, in one namespace (a later block
  uses the names of an earlier one), in a scratch directory that holds what
  the pages assume: ``mesh/`` (a copy of ``examples/mesh``), ``ca/`` (a
  development CA, as ``inmesh ca init ca/`` makes it) and ``certs/frontend/``,
  ``certs/backend/`` (workload certificates for ``frontend-sa`` and
  ``backend-sa``, as ``inmesh cert issue`` writes them). Top-level ``await``
  is allowed: such a block runs in its own event loop. Two changes keep runs
  hermetic: the copy of ``examples/mesh`` leaves out hosts resolved by DNS
  (no DNS queries), and the WorkloadEntry port ``18080`` is replaced by a free
  port in ``mesh/`` and in the code (``file`` blocks included), so that
  concurrent runs cannot collide. A page that writes its own files (``file``
  below) starts without ``mesh/``. Meshes, servers and clients a page leaves
  open are closed after it.
* ``yaml`` holding Istio resources (``apiVersion`` and ``kind``): checked
  with inmesh's loader, as ``inmesh validate`` does; errors fail the test.
* ``sh``, ``console`` (lines after ``$``), ``bash``, ``shell``: every command
  line starting with ``inmesh`` is parsed with the real argument parser
  (``inmesh.cli.main.build_parser``), not run.

HTML comments on the lines right before a fence (one per line; several may
be combined) change that:

* ``<!-- snippet: skip: REASON -->``: not exercised (keep these rare; say why);
* ``<!-- snippet: invalid -->``: YAML that must *fail* validation;
* ``<!-- snippet: file PATH -->``: the block is also written to ``PATH`` in the
  scratch directory when the page's code reaches it, so code after it can
  load it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
EXAMPLE_PORT = "18080"
"""The backend WorkloadEntry's port in examples/mesh (and in the pages' code)."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"<!--\s*snippet:\s*(?P<what>[\w-]+)\s*:?\s*(?P<arg>.*?)\s*-->")
_DIRECTIVES = frozenset({"skip", "invalid", "file"})
_SHELLS = frozenset({"sh", "bash", "shell", "console"})


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """Line of the first line of code (1-based)."""
    lang: str
    code: str
    directives: Mapping[str, str] = field(default_factory=dict)
    """``{"skip": reason, "invalid": "", "file": path}``: the comments before the fence."""

    def has(self, directive: str) -> bool:
        return directive in self.directives

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, each with the snippet directives before it."""
    return _parse(page)[0]


def _parse(page: Path) -> tuple[list[Block], list[int]]:
    """The fenced blocks, and the lines of snippet comments that precede no fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    markers: list[int] = []
    attached: set[int] = set()
    i = 0
    while i < len(lines):
        if _MARKER.fullmatch(lines[i].strip()):
            markers.append(i)
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        lang = (m["info"].split() or [""])[0].lower()
        directives: dict[str, str] = {}
        k = i - 1
        while k >= 0 and (not lines[k].strip() or _MARKER.fullmatch(lines[k].strip())):
            mark = _MARKER.fullmatch(lines[k].strip())
            if mark:
                directives[mark["what"]] = mark["arg"]
                attached.add(k)
            k -= 1
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            text = lines[j]
            strip = min(indent, len(text) - len(text.lstrip(" ")))
            body.append(text[strip:])
            j += 1
        blocks.append(Block(page, i + 2, lang, "\n".join(body) + "\n", directives))
        i = j + 1
    return blocks, [k + 1 for k in markers if k not in attached]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _pages_with(langs: frozenset[str]) -> list[Any]:
    return [
        pytest.param(p, id=_page_id(p))
        for p in PAGES
        if any(b.lang in langs and not b.has("skip") for b in code_blocks(p))
    ]


# -- the site ----------------------------------------------------------------


def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's end-of-life banner
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "WARNING" not in log, log
    assert (tmp_path / "site" / "index.html").is_file()


def test_directives_are_known_and_attached_to_a_block() -> None:
    problems = []
    for page in PAGES:
        blocks, orphans = _parse(page)
        problems += [
            f"{_page_id(page)}:{n}: this snippet comment precedes no fence" for n in orphans
        ]
        for b in blocks:
            for unknown in sorted(set(b.directives) - _DIRECTIVES):
                problems.append(f"{b.where}: unknown snippet directive {unknown!r}")
            if b.has("skip") and not b.directives["skip"]:
                problems.append(f"{b.where}: say why the snippet is skipped")
            if b.has("file") and not b.directives["file"]:
                problems.append(f"{b.where}: 'file' needs a path")
    assert not problems, "\n".join(problems)


def test_the_pages_have_snippets_to_check() -> None:
    blocks = [b for p in PAGES for b in code_blocks(p)]
    assert sum(b.lang == "python" for b in blocks) >= 10
    assert sum(b.lang == "yaml" for b in blocks) >= 5
    assert sum(b.lang in _SHELLS for b in blocks) >= 5


# -- YAML ---------------------------------------------------------------------


def _looks_like_istio(code: str) -> bool:
    try:
        docs = list(yaml.safe_load_all(code))
    except yaml.YAMLError:
        return True  # let the loader say what is wrong
    return any(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs)


@pytest.mark.parametrize("page", _pages_with(frozenset({"yaml", "yml"})))
def test_yaml_snippets_validate(page: Path) -> None:
    from inmesh.config.load import load_text

    problems = []
    checked = 0
    for b in code_blocks(page):
        if b.lang not in ("yaml", "yml") or b.has("skip"):
            continue
        if not _looks_like_istio(b.code):
            continue
        checked += 1
        # Leading newlines make the diagnostics name the page's own line numbers.
        result = load_text("\n" * (b.line - 1) + b.code, file=_page_id(page))
        errors = [str(d) for d in result.errors]
        if b.has("invalid"):
            if not errors:
                problems.append(f"{b.where}: marked invalid, but inmesh accepts it")
        elif errors:
            problems.extend(errors)
    if not checked:
        pytest.skip("no Istio resources among this page's YAML blocks")
    assert not problems, "\n".join(problems)


# -- command lines --------------------------------------------------------------


def _command_lines(block: Block) -> Iterator[str]:
    """The command lines of a shell block, continuations joined."""
    pending = ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if block.lang == "console" and not pending:
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield (pending + line).strip()
        pending = ""
    if pending:
        yield pending.strip()


def _argv(line: str) -> list[str]:
    """The words of a command, up to a shell operator (``|``, ``&&``, ``>``...)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words = []
    for word in lex:
        if word and set(word) <= set("();<>|&"):
            break
        words.append(word)
    return words


@pytest.mark.parametrize("page", _pages_with(_SHELLS))
def test_inmesh_command_lines_parse(page: Path) -> None:
    from inmesh.cli.main import build_parser

    parser = build_parser()
    problems = []
    checked = 0
    for b in code_blocks(page):
        if b.lang not in _SHELLS or b.has("skip"):
            continue
        for line in _command_lines(b):
            argv = _argv(line)
            if not argv or argv[0] != "inmesh":
                continue
            checked += 1
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(argv[1:])
            except SystemExit as exc:
                if exc.code not in (0, None):
                    problems.append(f"{b.where}: {line}\n  {err.getvalue().strip()}")
    if not checked:
        pytest.skip("no inmesh command lines on this page")
    assert not problems, "\n".join(problems)


# -- Python ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the pages' code expects to find in its working directory."""
    from inmesh.identity.ca import LocalCA
    from inmesh.identity.spiffe import SpiffeId

    root = tmp_path_factory.mktemp("docs-sandbox")
    mesh = root / "mesh"
    shutil.copytree(ROOT / "examples" / "mesh", mesh)
    for f in mesh.glob("*.yaml"):
        docs = f.read_text().split("\n---\n")
        kept = [d for d in docs if "resolution: DNS" not in d]
        f.write_text("\n---\n".join(kept))
    ca = LocalCA.create()
    ca.save(root / "ca")
    for name in ("frontend", "backend"):
        ca.issue(SpiffeId.for_workload("default", f"{name}-sa")).write(root / "certs" / name)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(block: Block, code: str, namespace: dict[str, Any]) -> None:
    # Leading newlines make tracebacks name the page's own line numbers.
    source = "\n" * (block.line - 1) + code
    compiled = compile(
        source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))
    else:
        exec(compiled, namespace)


def _close_leftovers(namespace: dict[str, Any]) -> None:
    """Close what a page left open: servers, then clients, then meshes and stores."""
    import httpx

    import inmesh
    from inmesh.inbound.serve import BackgroundServer

    values = list(namespace.values())
    for v in values:
        if isinstance(v, BackgroundServer):
            with contextlib.suppress(Exception):
                v.stop()
    for v in values:
        if isinstance(v, httpx.Client):
            v.close()
    for v in values:
        if isinstance(v, (inmesh.Mesh, inmesh.ConfigStore)):
            v.close()


def _inmesh_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("inmesh")}


@pytest.mark.parametrize("page", _pages_with(frozenset({"python"})))
def test_python_snippets_run(
    page: Path, sandbox_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    shutil.copytree(sandbox_template, work)
    blocks = code_blocks(page)
    if any(b.has("file") for b in blocks):
        shutil.rmtree(work / "mesh")  # the page writes its own configuration
    port = str(_free_port())
    for f in (work / "mesh").glob("*.yaml"):
        f.write_text(f.read_text().replace(EXAMPLE_PORT, port))
    monkeypatch.chdir(work)
    before = _inmesh_threads()
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    try:
        for b in blocks:
            if b.has("skip"):
                continue
            code = b.code.replace(EXAMPLE_PORT, port)
            if b.has("file"):
                target = work / b.directives["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(code)
            elif b.lang == "python":
                _run(b, code, namespace)
    finally:
        _close_leftovers(namespace)
    deadline = time.monotonic() + 5
    while _inmesh_threads() - before and time.monotonic() < deadline:
        time.sleep(0.02)
    left = sorted(t.name for t in _inmesh_threads() - before)
    assert not left, f"{_page_id(page)} left threads running: {left}"
