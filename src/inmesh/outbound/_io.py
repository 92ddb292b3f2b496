"""The few I/O primitives whose sync and async forms differ in more than keywords.

``scripts/unasync.py`` turns the async transport into the sync one by
rewriting names; what cannot be rewritten lives here in both forms:

* :func:`sleep_async` / :func:`sleep_sync` (injected fault delays);
* :class:`AsyncShield` / :class:`Shield`: a block that cancellation cannot
  interrupt (closing a connection after a failed or cancelled request); a
  no-op in threads, which are never cancelled;
* :class:`AsyncShadowDispatcher` / :class:`ShadowDispatcher`: fire-and-forget
  mirroring with bounded concurrency. The async one starts a detached task on
  the running loop (``asyncio`` task, or a trio system task), so the caller
  never waits for it; the sync one hands the job to a few daemon worker
  threads through a bounded queue. When the bound is reached new shadows are
  dropped (and counted), never queued without limit: a slow or hanging shadow
  costs at most ``max_in_flight`` slots and never the caller's latency. Each
  shadow is cut off after its ``timeout`` (the route timeout, else
  :data:`DEFAULT_SHADOW_TIMEOUT`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = [
    "DEFAULT_SHADOW_TIMEOUT",
    "AsyncAttemptScope",
    "AsyncShadowDispatcher",
    "AsyncShield",
    "AsyncWaiter",
    "AttemptScope",
    "ShadowDispatcher",
    "ShadowStats",
    "Shield",
    "Waiter",
    "sleep_async",
    "sleep_sync",
]

log = logging.getLogger("inmesh.outbound.mirror")

DEFAULT_SHADOW_TIMEOUT = 30.0
"""Seconds a shadow request may take when its route sets no timeout."""


async def sleep_async(seconds: float) -> None:
    await anyio.sleep(seconds)


def sleep_sync(seconds: float) -> None:
    time.sleep(seconds)


class AsyncShield:
    """``with AsyncShield():`` runs its block shielded from cancellation."""

    __slots__ = ("_scope",)

    def __enter__(self) -> AsyncShield:
        self._scope = anyio.CancelScope(shield=True)
        self._scope.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool:
        return bool(self._scope.__exit__(*exc))


class Shield:
    """The sync twin of :class:`AsyncShield`: threads are never cancelled."""

    __slots__ = ()

    def __enter__(self) -> Shield:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class AsyncAttemptScope:
    """Bounds one upstream attempt by the mesh's timeouts: real cancellation on
    the event loop (``expired`` tells whether it fired)."""

    __slots__ = ("_scope",)

    def __init__(self, seconds: float | None) -> None:
        self._scope = anyio.move_on_after(seconds) if seconds is not None else None

    def __enter__(self) -> AsyncAttemptScope:
        if self._scope is not None:
            self._scope.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self._scope is None:
            return False
        return bool(self._scope.__exit__(*exc))

    @property
    def expired(self) -> bool:
        return self._scope is not None and self._scope.cancelled_caught


class AttemptScope:
    """The sync twin of :class:`AsyncAttemptScope`: threads cannot be cancelled,
    so the bound is enforced by clamping the socket timeouts (see the
    transport); ``expired`` is always ``False`` here."""

    __slots__ = ()

    def __init__(self, seconds: float | None) -> None:
        pass

    def __enter__(self) -> AttemptScope:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @property
    def expired(self) -> bool:
        return False


class AsyncWaiter:
    """Waits for a pending circuit-breaker ticket to become active (event loop).

    The event is only made when someone waits: most tickets never do.
    """

    __slots__ = ("_event", "_fired")

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._fired = False

    def ready(self, _ticket: object = None) -> None:
        self._fired = True
        if self._event is not None:
            self._event.set()

    async def wait(self, timeout: float | None) -> bool:
        self._event = anyio.Event()
        if self._fired:
            return True
        with anyio.move_on_after(timeout):
            await self._event.wait()
            return True
        return False


class Waiter:
    """Waits for a pending circuit-breaker ticket to become active (threads).

    The event is only made when someone waits: most tickets never do.
    """

    __slots__ = ("_event", "_fired")

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._fired = False

    def ready(self, _ticket: object = None) -> None:
        self._fired = True
        if self._event is not None:
            self._event.set()

    def wait(self, timeout: float | None) -> bool:
        self._event = threading.Event()
        if self._fired:
            return True
        return self._event.wait(timeout)


class ShadowStats:
    """Counters of a dispatcher (read without locking; they only grow)."""

    __slots__ = ("completed", "dispatched", "dropped", "failed")

    def __init__(self) -> None:
        self.dispatched = 0
        self.completed = 0
        self.failed = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return (
            f"ShadowStats(dispatched={self.dispatched}, completed={self.completed}, "
            f"failed={self.failed}, dropped={self.dropped})"
        )


class _Slots:
    """The in-flight bound and counters both dispatchers share."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.stats = ShadowStats()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _take(self) -> bool:
        with self._lock:
            if self._closed or self._in_flight >= self.max_in_flight:
                self.stats.dropped += 1
                return False
            self._in_flight += 1
            self.stats.dispatched += 1
            return True

    def _release(self, ok: bool | None) -> None:
        """``ok``: completed / failed; ``None``: dropped before it ran."""
        with self._lock:
            self._in_flight -= 1
            if ok is None:
                self.stats.dropped += 1
            elif ok:
                self.stats.completed += 1
            else:
                self.stats.failed += 1


class AsyncShadowDispatcher(_Slots):
    """Runs shadow requests as detached tasks of the current event loop."""

    def __init__(self, max_in_flight: int = 64) -> None:
        super().__init__(max_in_flight)
        self._scopes: set[anyio.CancelScope] = set()
        self._tasks: set[Any] = set()

    def dispatch(self, job: Callable[[], Awaitable[None]], timeout: float | None) -> bool:
        """Start ``job`` in the background; ``False`` if it was dropped."""
        if not self._take():
            return False
        try:
            self._spawn(job, timeout if timeout is not None else DEFAULT_SHADOW_TIMEOUT)
        except BaseException:
            self._release(None)
            raise
        return True

    def _spawn(self, job: Callable[[], Awaitable[None]], timeout: float) -> None:
        import sniffio

        library = sniffio.current_async_library()

        async def run() -> None:
            ok = False
            try:
                with anyio.move_on_after(timeout) as scope:
                    self._scopes.add(scope)
                    try:
                        await job()
                        ok = True
                    finally:
                        self._scopes.discard(scope)
            except Exception as exc:
                log.debug("shadow request failed: %s", exc)
            finally:
                self._release(ok)

        if library == "trio":
            import trio

            trio.lowlevel.spawn_system_task(run, name="inmesh-shadow")
        else:
            import asyncio

            task = asyncio.get_running_loop().create_task(run(), name="inmesh-shadow")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> bool:
        """Cancel the shadows still running; ``True`` (they stop at their next await)."""
        with self._lock:
            self._closed = True
            scopes = list(self._scopes)
        for scope in scopes:
            scope.cancel()
        await anyio.lowlevel.checkpoint()
        return True


class ShadowDispatcher(_Slots):
    """Runs shadow requests on a few daemon threads fed by a bounded queue."""

    def __init__(self, max_in_flight: int = 64, workers: int = 4) -> None:
        super().__init__(max_in_flight)
        self._workers = max(1, min(workers, max_in_flight))
        self._queue: queue.Queue[tuple[Callable[[], None], float] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def dispatch(self, job: Callable[[], None], timeout: float | None) -> bool:
        """Queue ``job`` for a worker thread; ``False`` if it was dropped.

        ``timeout`` is not enforced here: the job itself passes it to httpcore
        as its connect, read and write timeouts.
        """
        if not self._take():
            return False
        with self._lock:
            if len(self._threads) < self._workers and len(self._threads) < self._in_flight:
                t = threading.Thread(target=self._work, name="inmesh-shadow", daemon=True)
                self._threads.append(t)
                t.start()
        self._queue.put((job, timeout if timeout is not None else DEFAULT_SHADOW_TIMEOUT))
        return True

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, _ = item
            ok = False
            try:
                job()
                ok = True
            except Exception as exc:
                log.debug("shadow request failed: %s", exc)
            finally:
                self._release(ok)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the workers (queued shadows are dropped); waits up to ``timeout`` seconds.

        ``True`` when every worker stopped; ``False`` if some shadow is still
        running (its connections must then stay open until it times out).
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._release(None)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
