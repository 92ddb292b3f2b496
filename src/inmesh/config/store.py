"""``ConfigStore``: the one mutable configuration object.

It loads the configured paths into a :class:`ConfigSnapshot`, watches them,
and when they change builds a new snapshot in its own thread (never on a
request path), swaps it in with one reference assignment and tells its
subscribers. An invalid change keeps the last good snapshot: every error is
logged (logger ``inmesh.config``) and counted, and :attr:`last_error` says why.

Watching polls file metadata (path, inode, size, mtime) every
``poll_interval`` seconds (default 0.25 s, so a change is live well within a
second) from one daemon thread that :meth:`close` stops and joins. Polling
works the same on every filesystem, including Kubernetes ConfigMap volumes
(whose files are swapped through symlinks) and network mounts where inotify
stays silent. Because file timestamps can be coarser than a burst of edits,
after every change the contents are read once more on the next poll and
rebuilt if they still differ, so a burst of edits always ends on the last
content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from inmesh.errors import ConfigError

from .load import iter_config_files, load_paths
from .snapshot import ConfigOptions, ConfigSnapshot, build_snapshot

__all__ = ["ConfigStore", "StoreStats"]

log = logging.getLogger("inmesh.config")

Subscriber = Callable[[ConfigSnapshot], None]
_Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(slots=True)
class StoreStats:
    """Counters since the store was created."""

    reloads: int = 0
    """Snapshots swapped in after the first one."""
    reload_errors: int = 0
    """Changes rejected because the new configuration was invalid."""
    checks: int = 0
    """Polls of the watched files."""


class ConfigStore:
    """Loads, watches and swaps the configuration.

    >>> store = ConfigStore(["mesh/"])            # doctest: +SKIP
    >>> with store:                               # loads now, watches until closed
    ...     snapshot = store.current

    The first load raises :class:`~inmesh.errors.ConfigError` if the
    configuration is invalid (there is no last good snapshot to keep).
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        options: ConfigOptions | None = None,
        poll_interval: float = 0.25,
        watch: bool = True,
    ) -> None:
        self._paths: tuple[Path, ...] = tuple(Path(p) for p in paths)
        self._options = options or ConfigOptions()
        self._poll_interval = poll_interval
        self._watch = watch
        self._lock = threading.RLock()  # serialises reloads; readers never take it
        self._sub_lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._current: ConfigSnapshot | None = None
        self._fingerprint: _Fingerprint = ()
        self._content_hash = ""
        self._verify_pending = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = StoreStats()
        self.last_error: ConfigError | None = None
        """Why the most recent change was rejected (``None`` after a good reload)."""

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> ConfigSnapshot:
        """Load now (raising ``ConfigError`` if invalid) and start watching."""
        if self._current is None:
            self._reload(initial=True)
        if self._watch and self._thread is None and self._paths:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="inmesh-config-watch", daemon=True
            )
            self._thread.start()
        assert self._current is not None
        return self._current

    def close(self) -> None:
        """Stop watching; the current snapshot stays readable."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> ConfigStore:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ------------------------------------------------------------

    @property
    def current(self) -> ConfigSnapshot:
        """The snapshot in force. Cheap: one attribute read, no lock."""
        snap = self._current
        if snap is None:
            raise RuntimeError("ConfigStore.start() has not been called")
        return snap

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(snapshot)`` after every swap (in the watcher thread).

        Returns a function that unsubscribes. A callback that raises is logged
        and does not stop the others.
        """
        with self._sub_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._sub_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    # -- reloading ----------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the files now. Returns whether a new snapshot was swapped in.

        An invalid configuration keeps the current snapshot, is logged and
        counted, and is available as :attr:`last_error`; it is not raised.
        """
        return self._reload(initial=False)

    def check(self) -> bool:
        """Poll once: reload if the files changed. Returns whether it swapped."""
        self.stats.checks += 1
        fingerprint = self._scan()
        if fingerprint == self._fingerprint and not self._verify_pending:
            return False
        self._verify_pending = fingerprint != self._fingerprint
        return self._reload(initial=False, fingerprint=fingerprint)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.check()
            except Exception:  # never let the watcher die
                log.exception("configuration watcher failed; will retry")

    def _scan(self) -> _Fingerprint:
        entries = []
        for path in iter_config_files(self._paths):
            try:
                st = path.stat()
            except OSError:
                entries.append((str(path), -1, -1, -1))
                continue
            entries.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(entries)

    def _reload(self, *, initial: bool, fingerprint: _Fingerprint | None = None) -> bool:
        with self._lock:
            if fingerprint is None:
                fingerprint = self._scan()
            started = time.perf_counter()
            result = load_paths(self._paths, default_namespace=self._options.default_namespace)
            content = _content_hash(result.files)
            if not initial and content == self._content_hash:
                self._fingerprint = fingerprint  # nothing new since the last attempt
                return False
            try:
                snapshot = build_snapshot(result, options=self._options)
            except ConfigError as exc:
                if initial:
                    raise
                self.stats.reload_errors += 1
                self.last_error = exc
                self._fingerprint = fingerprint
                self._content_hash = content
                log.error(
                    "configuration change rejected; keeping version %s (%d error%s)",
                    self._current.version if self._current else "-",
                    len(exc.errors),
                    "" if len(exc.errors) == 1 else "s",
                )
                for diag in exc.errors:
                    log.error("%s", diag)
                return False
            previous = self._current
            self._current = snapshot
            self._fingerprint = fingerprint
            self._content_hash = content
            self.last_error = None
            if not initial:
                self.stats.reloads += 1
            for diag in snapshot.warnings:
                log.warning("%s", diag)
            for diag in snapshot.infos:
                log.info("%s", diag)
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "configuration version %s active (%d resources, %.1f ms%s)",
                snapshot.version,
                len(snapshot),
                elapsed,
                f", was {previous.version}" if previous else "",
            )
            with self._sub_lock:
                subscribers = list(self._subscribers)
            # Notify while still holding the lock so subscribers see swaps in order.
            for callback in subscribers:
                try:
                    callback(snapshot)
                except Exception:
                    log.exception("configuration subscriber %r failed", callback)
        return True


def _content_hash(files: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()
