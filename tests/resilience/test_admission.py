"""Admission: Envoy's HTTP/1.1 connection-pool circuit breakers."""

from __future__ import annotations

import socket
import threading

import pytest

from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import (
    ConnectionPoolSettings,
    HTTPSettings,
    TcpKeepalive,
    TCPSettings,
)
from inmesh.outbound import keepalive_options
from inmesh.resilience.admission import (
    DEFAULT_THRESHOLD,
    Admission,
    Breaker,
    PoolSettings,
    Ticket,
    TicketState,
)

ACTIVE, PENDING, OVERFLOW, RELEASED = (
    TicketState.ACTIVE,
    TicketState.PENDING,
    TicketState.OVERFLOW,
    TicketState.RELEASED,
)


def limits(**kw: int) -> Admission:
    return Admission(PoolSettings(**kw))  # type: ignore[arg-type]


# ------------------------------------------------------------------- settings


def test_defaults_without_connection_pool_block() -> None:
    s = PoolSettings.from_settings(None)
    assert DEFAULT_THRESHOLD == 2**32 - 1
    assert s.max_connections == s.max_pending_requests == DEFAULT_THRESHOLD
    assert s.max_requests == s.max_retries == DEFAULT_THRESHOLD
    assert s.max_requests_per_connection is None
    assert s.connect_timeout == 10.0
    assert s.idle_timeout == 3600.0
    assert s.max_connection_duration is None
    assert PoolSettings() == s
    assert PoolSettings.from_settings(ConnectionPoolSettings()) == s


def test_seed_connection_pool() -> None:
    s = PoolSettings.from_settings(
        ConnectionPoolSettings(
            tcp=TCPSettings(max_connections=100),
            http=HTTPSettings(http1_max_pending_requests=10, max_requests_per_connection=10),
        )
    )
    assert s.max_connections == 100
    assert s.max_pending_requests == 10
    assert s.max_requests_per_connection == 10
    assert s.max_requests == s.max_retries == DEFAULT_THRESHOLD


def test_zero_means_istio_default() -> None:
    s = PoolSettings.from_settings(
        ConnectionPoolSettings(
            tcp=TCPSettings(max_connections=0),
            http=HTTPSettings(
                http1_max_pending_requests=0,
                http2_max_requests=0,
                max_retries=0,
                max_requests_per_connection=0,
            ),
        )
    )
    assert s == PoolSettings()


def test_tcp_keepalive_translation() -> None:
    def keepalive(**kw: object) -> object:
        tcp = TCPSettings(tcp_keepalive=TcpKeepalive(**kw))  # type: ignore[arg-type]
        return PoolSettings.from_settings(ConnectionPoolSettings(tcp=tcp)).tcp_keepalive

    assert PoolSettings().tcp_keepalive is None
    assert keepalive() == (None, None, None)  # SO_KEEPALIVE with the OS defaults
    assert keepalive(probes=0, time=Duration.of(7.9), interval=Duration.of(0.5)) == (None, 7, 0)
    assert keepalive(probes=3, time=Duration.of(60)) == (3, 60, None)


def test_keepalive_socket_options() -> None:
    on = (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    tcp = socket.IPPROTO_TCP
    assert keepalive_options() == (on,)
    assert keepalive_options(3, 60, 0) == (
        on,
        (tcp, socket.TCP_KEEPCNT, 3),
        (tcp, socket.TCP_KEEPIDLE, 60),
    )
    assert keepalive_options(None, None, 2) == (on, (tcp, socket.TCP_KEEPINTVL, 2))


def test_timeouts_translation() -> None:
    s = PoolSettings.from_settings(
        ConnectionPoolSettings(
            tcp=TCPSettings(
                connect_timeout=Duration.parse("250ms"),
                idle_timeout=Duration.of(60),
                max_connection_duration=Duration.of(120),
            ),
            http=HTTPSettings(http2_max_requests=7, max_retries=2),
        )
    )
    assert s.connect_timeout == 0.25
    assert s.idle_timeout == 60.0  # tcp.idleTimeout when http.idleTimeout is unset
    assert s.max_connection_duration == 120.0
    assert (s.max_requests, s.max_retries) == (7, 2)
    both = PoolSettings.from_settings(
        ConnectionPoolSettings(
            tcp=TCPSettings(idle_timeout=Duration.of(60)),
            http=HTTPSettings(idle_timeout=Duration.of(5)),
        )
    )
    assert both.idle_timeout == 5.0  # http wins
    off = PoolSettings.from_settings(
        ConnectionPoolSettings(tcp=TCPSettings(idle_timeout=Duration.of(0)))
    )
    assert off.idle_timeout is None  # 0s disables it
    mesh = PoolSettings.from_settings(
        ConnectionPoolSettings(tcp=TCPSettings(max_connections=3)), mesh_connect_timeout=2.0
    )
    assert mesh.connect_timeout == 2.0


# ----------------------------------------------------------------------- limits


def test_default_admission_is_effectively_unlimited() -> None:
    adm = Admission()
    tickets = [adm.admit() for _ in range(1000)]
    assert all(t.state is ACTIVE for t in tickets)
    assert adm.active == 1000
    for t in tickets:
        t.release()
    assert adm.active == 0


def test_max_connections_then_pending_then_overflow() -> None:
    adm = limits(max_connections=2, max_pending_requests=2)
    states = [adm.admit().state for _ in range(5)]
    assert states == [ACTIVE, ACTIVE, PENDING, PENDING, OVERFLOW]
    s = adm.stats()
    assert (s.active, s.pending, s.pending_overflow, s.rq_overflow) == (2, 2, 1, 0)
    assert s.cx_overflow == 3 and s.pending_total == 2 and s.overflow_total == 1


def test_pending_requests_get_connections_in_order() -> None:
    adm = limits(max_connections=1, max_pending_requests=5)
    first = adm.admit()
    woken: list[str] = []
    waiting = [adm.admit(on_ready=lambda t, n=n: woken.append(n)) for n in "abc"]
    assert [t.state for t in waiting] == [PENDING] * 3
    first.release()
    assert woken == ["a"] and waiting[0].state is ACTIVE
    assert adm.active == 1 and adm.pending == 2
    waiting[0].release()
    waiting[1].release()
    assert woken == ["a", "b", "c"]
    assert waiting[2].state is ACTIVE
    waiting[2].release()
    s = adm.stats()
    assert (s.active, s.pending, s.admitted_total) == (0, 0, 4)


def test_cancelled_pending_ticket_leaves_the_queue() -> None:
    adm = limits(max_connections=1, max_pending_requests=1)
    first = adm.admit()
    calls: list[Ticket] = []
    waiting = adm.admit(on_ready=calls.append)
    waiting.release()  # e.g. its timeout expired
    assert waiting.state is RELEASED and adm.pending == 0
    assert adm.admit().state is PENDING  # the slot is free again
    first.release()
    assert calls == []  # never called for a cancelled ticket
    assert adm.stats().pending_cancelled == 1


def test_max_requests_overflows_without_waiting() -> None:
    adm = limits(max_requests=2)
    a, b = adm.admit(), adm.admit()
    c = adm.admit()
    assert (a.state, b.state, c.state) == (ACTIVE, ACTIVE, OVERFLOW)
    assert c.overflow is Breaker.REQUESTS
    assert adm.stats().rq_overflow == 1 and adm.pending == 0
    a.release()
    assert adm.admit().state is ACTIVE


def test_release_is_idempotent_on_every_state() -> None:
    adm = limits(max_connections=1, max_pending_requests=0)
    a = adm.admit()
    over = adm.admit()
    assert over.state is OVERFLOW and over.overflow is Breaker.PENDING
    a.release()
    a.release()
    over.release()
    over.release()
    assert adm.active == 0
    assert adm.admit().state is ACTIVE
    assert adm.active == 1


def test_ticket_is_a_context_manager() -> None:
    adm = limits(max_connections=1)
    with adm.admit() as t:
        assert t.admitted and adm.active == 1
    assert adm.active == 0 and t.state is RELEASED
    with pytest.raises(RuntimeError), adm.admit():
        raise RuntimeError("boom")
    assert adm.active == 0


def test_try_admit_returns_none_on_overflow() -> None:
    adm = limits(max_connections=1, max_pending_requests=1)
    assert adm.try_admit() is not None
    pending = adm.try_admit()
    assert pending is not None and pending.state is PENDING
    assert adm.try_admit() is None


def test_update_settings_starts_pending_requests_that_now_fit() -> None:
    adm = limits(max_connections=1, max_pending_requests=10)
    adm.admit()
    woken: list[Ticket] = []
    waiting = [adm.admit(on_ready=woken.append) for _ in range(3)]
    adm.update(PoolSettings(max_connections=3, max_pending_requests=10))
    assert woken == waiting[:2] and all(t.state is ACTIVE for t in waiting[:2])
    assert adm.active == 3 and adm.pending == 1
    # A lower max_requests refuses queued requests when their turn comes.
    adm.update(PoolSettings(max_connections=4, max_pending_requests=10, max_requests=3))
    assert waiting[2].state is OVERFLOW and waiting[2].overflow is Breaker.REQUESTS
    assert woken[-1] is waiting[2]


def test_callback_errors_do_not_lose_other_wakeups() -> None:
    adm = limits(max_connections=1, max_pending_requests=5)
    adm.admit()
    woken: list[Ticket] = []

    def boom(t: Ticket) -> None:
        raise ValueError("callback failed")

    first = adm.admit(on_ready=boom)
    second = adm.admit(on_ready=woken.append)
    with pytest.raises(ValueError, match="callback failed"):
        adm.update(PoolSettings(max_connections=3, max_pending_requests=5))
    assert first.state is ACTIVE and woken == [second] and second.state is ACTIVE
    assert adm.active == 3


# ---------------------------------------------------- Istio's circuit-breaking task


def test_istio_task_simultaneous_callers() -> None:
    """maxConnections 1, http1MaxPendingRequests 1: one active + one pending; with
    maxRequestsPerConnection 1 the first request is pending while it connects, so a
    simultaneous second one overflows (as in Envoy, which counts it as pending)."""

    def settings(mrpc: int | None) -> PoolSettings:
        return PoolSettings.from_settings(
            ConnectionPoolSettings(
                tcp=TCPSettings(max_connections=1),
                http=HTTPSettings(http1_max_pending_requests=1, max_requests_per_connection=mrpc),
            )
        )

    adm = Admission(settings(None))
    two = [adm.admit() for _ in range(2)]
    assert [t.state for t in two] == [ACTIVE, PENDING]
    adm2 = Admission(settings(None))
    three = [adm2.admit() for _ in range(3)]
    assert [t.state for t in three] == [ACTIVE, PENDING, OVERFLOW]
    assert three[2].overflow is Breaker.PENDING
    fresh = Admission(settings(1))
    first = fresh.admit()
    assert first.state is ACTIVE and first.connecting
    assert fresh.admit().state is OVERFLOW
    first.connect_finished()
    assert fresh.admit().state is PENDING


def _fortio(callers: int, requests: int, *, connect_window: bool) -> tuple[int, int]:
    """A deterministic fortio: each caller sends ``requests`` requests one after
    the other; in every round the callers act in turn. A request that got a
    connection holds it until its caller's next turn. With ``connect_window``
    the driver reports connection set-up: every request opens a new connection
    (``maxRequestsPerConnection: 1`` closes it after one request) which is
    ready only at the end of the round. Returns (200s, 503s)."""
    adm = Admission(PoolSettings(max_connections=1, max_pending_requests=1))
    left = [requests] * callers
    holding: dict[int, Ticket] = {}
    waiting: dict[int, Ticket] = {}
    ok = overflow = 0

    def hold(c: int, t: Ticket) -> None:
        holding[c] = t
        if connect_window:
            t.connect_started()

    while any(left) or holding or waiting:
        for c in range(callers):
            if c in holding:
                holding.pop(c).release()  # response done
                ok += 1
            elif c in waiting:
                if waiting[c].state is ACTIVE:
                    hold(c, waiting.pop(c))
            elif left[c]:
                left[c] -= 1
                t = adm.admit()
                if t.state is OVERFLOW:
                    overflow += 1
                elif t.state is PENDING:
                    waiting[c] = t
                else:
                    hold(c, t)
        for t in holding.values():
            t.connect_finished()
    return ok, overflow


def test_istio_task_fortio_like_runs() -> None:
    # Without connection set-up time one caller always fits in the pending slot.
    assert _fortio(2, 20, connect_window=False) == (40, 0)
    ok3, over3 = _fortio(3, 20, connect_window=False)
    assert over3 > 0 and ok3 + over3 == 60
    # With Envoy's pending-while-connecting, two callers already overflow
    # sometimes, and three overflow more.
    ok2, over2 = _fortio(2, 20, connect_window=True)
    assert over2 > 0 and ok2 + over2 == 40
    ok3c, over3c = _fortio(3, 20, connect_window=True)
    assert over3c > over2 and ok3c + over3c == 60


def test_connect_window_counts_as_pending() -> None:
    adm = limits(max_connections=2, max_pending_requests=1)
    a = adm.admit()
    a.connect_started()
    assert a.connecting and adm.pending == 1 and adm.active == 1
    b = adm.admit()  # a second connection may be opened ...
    assert b.state is ACTIVE
    b.connect_started()
    c = adm.admit()  # ... but the pending budget is used up by connecting requests
    assert c.state is OVERFLOW and c.overflow is Breaker.PENDING
    a.connect_finished()
    a.connect_finished()  # idempotent
    assert adm.pending == 1
    b.release()  # connect failure: releasing is enough
    assert adm.pending == 0 and adm.active == 1
    a.release()
    assert adm.stats().active == 0


def test_connect_hooks_ignore_non_active_tickets() -> None:
    adm = limits(max_connections=1, max_pending_requests=1)
    a = adm.admit()
    p = adm.admit()
    p.connect_started()
    assert adm.pending == 1 and not p.connecting
    a.release()
    p.release()
    p.connect_started()
    assert adm.pending == 0 and adm.active == 0


# ------------------------------------------------------------------ concurrency


def test_thread_safety_with_real_waiters() -> None:
    adm = limits(max_connections=3, max_pending_requests=4)
    done = threading.Barrier(9)
    peak = 0
    lock = threading.Lock()
    counts = {"ok": 0, "overflow": 0}

    def caller() -> None:
        nonlocal peak
        for _ in range(300):
            ev = threading.Event()
            t = adm.admit(on_ready=lambda _t, ev=ev: ev.set())
            if t.state is PENDING:
                assert ev.wait(5)
            if t.state is OVERFLOW:
                with lock:
                    counts["overflow"] += 1
                continue
            with t, lock:
                peak = max(peak, adm.active)
                counts["ok"] += 1
        done.wait()

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for th in threads:
        th.start()
    done.wait()
    for th in threads:
        th.join()
    s = adm.stats()
    assert peak <= 3
    assert (s.active, s.pending) == (0, 0)
    assert counts["ok"] + counts["overflow"] == 2400
    assert s.admitted_total == counts["ok"] and s.overflow_total == counts["overflow"]
