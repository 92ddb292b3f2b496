"""The demo's output: a live step display on a terminal, plain lines elsewhere.

On a TTY the running step is one line redrawn ten times a second (spinner,
title, what it is doing, seconds so far); when it ends the line becomes
``✓ title (1.2 s)`` (or ``✗``) and the step's findings follow, indented.
Elsewhere (a pipe, a CI log) every line is printed once, as it happens:
``[3/8] title``, the findings, ``      ok (1.2 s)``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "Step"]

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Step:
    """The running step: :meth:`status` (transient) and :meth:`detail` (kept)."""

    def __init__(self, progress: Progress, index: int, title: str) -> None:
        self._progress = progress
        self.index = index
        self.title = title
        self.started = time.monotonic()
        self.status_text = ""
        self.details: list[str] = []

    def status(self, text: str) -> None:
        """What the step is doing now (shown on a TTY only)."""
        self.status_text = text

    def detail(self, text: str = "") -> None:
        """A finding to keep in the output, under the step's title."""
        self._progress._detail(self, text)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Progress:
    """Numbered steps on ``out``; ``live`` (default: ``out`` is a TTY) draws a spinner."""

    def __init__(self, out: TextIO | None = None, total: int = 0, live: bool | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.total = total
        self.live = self.out.isatty() if live is None else live
        color = self.live and not os.environ.get("NO_COLOR")
        self._green = "\x1b[32m" if color else ""
        self._red = "\x1b[31m" if color else ""
        self._dim = "\x1b[2m" if color else ""
        self._bold = "\x1b[1m" if color else ""
        self._reset = "\x1b[0m" if color else ""
        self._lock = threading.Lock()
        self._current: Step | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0

    # -- plain output -------------------------------------------------------

    def line(self, text: str = "") -> None:
        """A line outside any step."""
        with self._lock:
            self._clear()
            self.out.write(text + "\n")
            self.out.flush()

    def heading(self, text: str) -> None:
        self.line(f"{self._bold}{text}{self._reset}")

    # -- steps --------------------------------------------------------------

    @contextmanager
    def step(self, title: str, index: int | None = None) -> Iterator[Step]:
        """Run a step (numbered ``index``, default the next); an exception marks it failed."""
        self._index = self._index + 1 if index is None else index
        step = Step(self, self._index, title)
        with self._lock:
            self._current = step
            if not self.live:
                self.out.write(f"{self._label(step)} {title}\n")
                self.out.flush()
        if self.live:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._spin, name="inmesh-demo-progress", daemon=True
            )
            self._thread.start()
        outcome = "failed"
        try:
            yield step
            outcome = "ok"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            self._finish(step, outcome)

    def _label(self, step: Step) -> str:
        return f"[{step.index}/{self.total}]" if self.total else f"[{step.index}]"

    def _detail(self, step: Step, text: str) -> None:
        with self._lock:
            if self.live:
                step.details.append(text)
            else:
                self.out.write(f"      {text}\n" if text else "\n")
                self.out.flush()

    def _finish(self, step: Step, outcome: str) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        seconds = f"({step.elapsed:.1f} s)"
        with self._lock:
            if self.live:
                self._clear()
                self._current = None
                ok = outcome == "ok"
                mark = f"{self._green}✓{self._reset}" if ok else f"{self._red}✗{self._reset}"
                self.out.write(
                    f"{mark} {self._label(step)} {step.title} {self._dim}{seconds}{self._reset}\n"
                )
                for text in step.details:
                    self.out.write(f"      {text}\n" if text else "\n")
            else:
                self._current = None
                self.out.write(f"      {outcome.upper() if outcome != 'ok' else 'ok'} {seconds}\n")
            self.out.flush()

    def _clear(self) -> None:
        if self.live and self._current is not None:
            self.out.write("\r\x1b[2K")

    def _spin(self) -> None:
        i = 0
        while not self._stop.wait(0.1 if i else 0):
            with self._lock:
                step = self._current
                if step is None:
                    return
                status = f" — {step.status_text}" if step.status_text else ""
                text = (
                    f"{_SPINNER[i % len(_SPINNER)]} {self._label(step)} {step.title}"
                    f"{status} ({step.elapsed:.1f} s)"
                )
                width = _width(self.out)
                if width and len(text) >= width:
                    text = text[: width - 1]
                self.out.write("\r\x1b[2K" + text)
                self.out.flush()
            i += 1


def _width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0
