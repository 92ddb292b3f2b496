"""Deadline headers, arithmetic and the contextvar scope."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import httpx
import pytest

from inmesh.resilience.deadline import (
    Deadline,
    current_deadline,
    deadline_scope,
    earliest,
    parse_expected_timeout,
    parse_grpc_timeout,
)


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1H", 3600.0),
        ("2M", 120.0),
        ("3S", 3.0),
        ("100m", 0.1),
        ("250u", 0.00025),
        ("5000000n", 0.005),
        ("99999999m", 99999.999),  # 8 digits is the maximum
        ("00000010S", 10.0),
        (" 7S ", 7.0),
    ],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    got = parse_grpc_timeout(value)
    assert got == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "S",
        "1",
        "123",
        "100000000m",  # 9 digits
        "1s",
        "1h",
        "1F",
        "1.5S",
        "-1S",
        "+1S",
        "1 S",
        "1e3m",
        "٣S",  # non-ASCII digit
        "0S",  # zero: no timeout (as Envoy)
        "0H",
    ],
)
def test_grpc_timeout_invalid(value: str) -> None:
    assert parse_grpc_timeout(value) is None


@pytest.mark.parametrize(("value", "seconds"), [("1500", 1.5), ("1", 0.001), (" 20 ", 0.02)])
def test_expected_timeout(value: str, seconds: float) -> None:
    assert parse_expected_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "0", "-5", "+5", "1.5", "abc", "10ms", "1_000"])
def test_expected_timeout_invalid(value: str) -> None:
    assert parse_expected_timeout(value) is None


def test_from_headers_smaller_wins() -> None:
    h = {"x-envoy-expected-rq-timeout-ms": "3000", "grpc-timeout": "2S"}
    assert Deadline.from_headers(h, 100.0) == Deadline(102.0)
    h = {"x-envoy-expected-rq-timeout-ms": "500", "grpc-timeout": "2S"}
    assert Deadline.from_headers(h, 100.0) == Deadline(100.5)


def test_from_headers_ignores_invalid_and_case() -> None:
    h = {"X-Envoy-Expected-Rq-Timeout-Ms": "bogus", "Grpc-Timeout": "250m"}
    assert Deadline.from_headers(h, 10.0) == Deadline(10.25)
    assert Deadline.from_headers({"grpc-timeout": "x", "other": "1S"}, 10.0) is None
    assert Deadline.from_headers({}, 10.0) is None
    assert Deadline.from_headers({"x-envoy-expected-rq-timeout-ms": "0"}, 10.0) is None


def test_from_httpx_headers() -> None:
    h = httpx.Headers({"Grpc-Timeout": "1M", "X-Envoy-Expected-Rq-Timeout-Ms": "90000"})
    assert Deadline.from_headers(h, 0.0) == Deadline(60.0)


def test_remaining_expired_and_header_value() -> None:
    clock = FakeClock(100.0)
    d = Deadline(101.2345)
    assert d.remaining(clock) == pytest.approx(1.2345)
    assert d.header_value(clock) == "1234"
    assert not d.expired(clock)
    clock.t = 101.2345
    assert d.expired(clock)
    assert d.header_value(clock) == "0"
    clock.t = 200.0
    assert d.remaining(clock) == 0.0
    assert d.header_value(clock) == "0"


def test_header_round_trip() -> None:
    clock = FakeClock(5.0)
    d = Deadline.after(2.5, clock)
    assert d == Deadline(7.5)
    again = Deadline.from_headers({"x-envoy-expected-rq-timeout-ms": d.header_value(clock)}, 5.0)
    assert again == d


def test_earliest() -> None:
    assert earliest() is None
    assert earliest(None, None) is None
    assert earliest(None, Deadline(3.0), Deadline(2.0), None) == Deadline(2.0)
    assert earliest(Deadline(1.0)) == Deadline(1.0)


def test_scope_sets_narrows_and_resets() -> None:
    assert current_deadline() is None
    with deadline_scope(Deadline(10.0)) as outer:
        assert outer == current_deadline() == Deadline(10.0)
        with deadline_scope(Deadline(20.0)) as inner:  # later: does not extend
            assert inner == current_deadline() == Deadline(10.0)
        with deadline_scope(Deadline(5.0)):
            assert current_deadline() == Deadline(5.0)
        with deadline_scope(None):
            assert current_deadline() == Deadline(10.0)
        assert current_deadline() == Deadline(10.0)
    assert current_deadline() is None


def test_scope_resets_on_exception() -> None:
    with pytest.raises(RuntimeError), deadline_scope(Deadline(1.0)):
        raise RuntimeError
    assert current_deadline() is None


def test_scope_in_threads() -> None:
    seen: dict[str, object] = {}
    with deadline_scope(Deadline(42.0)):
        ctx = contextvars.copy_context()
        t1 = threading.Thread(target=lambda: seen.update(copied=ctx.run(current_deadline)))
        t2 = threading.Thread(target=lambda: seen.update(plain=current_deadline()))
        t1.start()
        t2.start()
        t1.join()
        t2.join()
    assert seen == {"copied": Deadline(42.0), "plain": None}


def test_scope_in_asyncio_tasks() -> None:
    async def child(at: float) -> tuple[Deadline | None, Deadline | None]:
        inherited = current_deadline()
        with deadline_scope(Deadline(at)):
            await asyncio.sleep(0)
            return inherited, current_deadline()

    async def main() -> list[tuple[Deadline | None, Deadline | None]]:
        with deadline_scope(Deadline(50.0)):
            results = await asyncio.gather(child(10.0), child(60.0))
            assert current_deadline() == Deadline(50.0)
        return list(results)

    assert asyncio.run(main()) == [
        (Deadline(50.0), Deadline(10.0)),
        (Deadline(50.0), Deadline(50.0)),
    ]


def test_scope_in_trio_tasks() -> None:
    trio = pytest.importorskip("trio")
    seen: list[Deadline | None] = []

    async def child() -> None:
        await trio.sleep(0)
        seen.append(current_deadline())

    async def main() -> None:
        with deadline_scope(Deadline(7.0)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                nursery.start_soon(child)

    trio.run(main)
    assert seen == [Deadline(7.0), Deadline(7.0)]
