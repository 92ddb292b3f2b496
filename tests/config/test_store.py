"""ConfigStore on real files: live reload, bad edits, deletions, bursts."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from inmesh.config.snapshot import ConfigSnapshot
from inmesh.config.store import ConfigStore
from inmesh.errors import ConfigError


def se(name: str, host: str, address: str = "10.0.0.1") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: default
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
  - address: {address}
"""


def write(path: Path, text: str) -> None:
    # Write in place, as editors and `kubectl`-style tools often do.
    path.write_text(text)


def wait_for(predicate, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def addresses(snapshot: ConfigSnapshot) -> list[str]:
    out = []
    for r in snapshot.of_kind("ServiceEntry"):
        out.extend(e.address for e in r.spec.endpoints)
    return sorted(out)


def test_first_load_raises_on_invalid(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", se("a", "a.example.com").replace("STATIC", "STATIK"))
    with pytest.raises(ConfigError) as info:
        ConfigStore([tmp_path]).start()
    assert "STATIK" in str(info.value)
    assert info.value.errors[0].line == 9


def test_valid_edit_is_live_within_one_second(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write(f, se("a", "a.example.com", "10.0.0.1"))
    seen: list[ConfigSnapshot] = []
    with ConfigStore([tmp_path]) as store:
        store.subscribe(seen.append)
        first = store.current
        t0 = time.monotonic()
        write(f, se("a", "a.example.com", "10.0.0.2"))
        wait_for(lambda: addresses(store.current) == ["10.0.0.2"])
        assert time.monotonic() - t0 < 1.0
        assert store.current.version != first.version
        assert seen and seen[-1] is store.current
        assert store.stats.reloads == 1


def test_invalid_edit_keeps_last_good_and_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "a.yaml"
    write(f, se("a", "a.example.com", "10.0.0.1"))
    caplog.set_level(logging.ERROR, logger="inmesh.config")
    with ConfigStore([tmp_path]) as store:
        good = store.current
        write(f, se("a", "a.example.com").replace("resolution: STATIC", "resolution: STATIK"))
        wait_for(lambda: store.stats.reload_errors == 1)
        assert store.current is good
        assert store.last_error is not None
        assert "STATIK" in str(store.last_error)
        assert any("STATIK" in r.getMessage() for r in caplog.records)
        # fixing it brings the new content in
        write(f, se("a", "a.example.com", "10.0.0.3"))
        wait_for(lambda: addresses(store.current) == ["10.0.0.3"])
        assert store.last_error is None


def test_syntax_error_keeps_last_good(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write(f, se("a", "a.example.com"))
    with ConfigStore([tmp_path]) as store:
        good = store.current
        write(f, "kind: [unclosed\n")
        wait_for(lambda: store.stats.reload_errors == 1)
        assert store.current is good


def test_deleting_a_file_removes_its_resources(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", se("a", "a.example.com", "10.0.0.1"))
    write(tmp_path / "b.yaml", se("b", "b.example.com", "10.0.0.9"))
    with ConfigStore([tmp_path]) as store:
        assert addresses(store.current) == ["10.0.0.1", "10.0.0.9"]
        (tmp_path / "b.yaml").unlink()
        wait_for(lambda: addresses(store.current) == ["10.0.0.1"])
        assert store.current.get("ServiceEntry", "default", "b") is None


def test_new_file_in_watched_directory_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", se("a", "a.example.com", "10.0.0.1"))
    with ConfigStore([tmp_path]) as store:
        sub = tmp_path / "nested"
        sub.mkdir()
        write(sub / "c.yml", se("c", "c.example.com", "10.0.0.7"))
        wait_for(lambda: addresses(store.current) == ["10.0.0.1", "10.0.0.7"])


def test_hundred_rapid_edits_end_on_last_content(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write(f, se("a", "a.example.com", "10.0.0.0"))
    with ConfigStore([tmp_path], poll_interval=0.05) as store:
        for i in range(1, 101):
            write(f, se("a", "a.example.com", f"10.0.{i // 256}.{i % 256}"))
        wait_for(lambda: addresses(store.current) == ["10.0.0.100"])
        time.sleep(0.3)  # and it stays there
        assert addresses(store.current) == ["10.0.0.100"]


def test_duplicate_across_files_is_rejected_on_reload(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", se("a", "a.example.com"))
    with ConfigStore([tmp_path]) as store:
        good = store.current
        write(tmp_path / "b.yaml", se("a", "other.example.com"))
        wait_for(lambda: store.stats.reload_errors == 1)
        assert store.current is good
        assert store.last_error is not None
        text = str(store.last_error.errors[0])
        assert "defined twice" in text and "a.yaml" in text and "b.yaml" in text


def test_reads_in_flight_are_never_blocked(tmp_path: Path) -> None:
    """Readers take no lock: a slow subscriber does not delay `current`."""
    f = tmp_path / "a.yaml"
    write(f, se("a", "a.example.com", "10.0.0.1"))
    release = threading.Event()
    with ConfigStore([tmp_path]) as store:
        store.subscribe(lambda snap: release.wait(2))
        write(f, se("a", "a.example.com", "10.0.0.2"))
        wait_for(lambda: addresses(store.current) == ["10.0.0.2"])
        t0 = time.perf_counter()
        for _ in range(1000):
            _ = store.current
        assert time.perf_counter() - t0 < 0.5
        release.set()


def test_close_joins_the_watcher_thread(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", se("a", "a.example.com"))
    before = {t.name for t in threading.enumerate()}
    store = ConfigStore([tmp_path])
    store.start()
    assert any(t.name == "inmesh-config-watch" for t in threading.enumerate())
    store.close()
    after = {t.name for t in threading.enumerate()}
    assert "inmesh-config-watch" not in after - before


def test_subscriber_exception_does_not_break_reload(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write(f, se("a", "a.example.com", "10.0.0.1"))
    got: list[str] = []
    with ConfigStore([tmp_path], watch=False) as store:
        store.subscribe(lambda s: 1 / 0)
        store.subscribe(lambda s: got.append(s.version))
        write(f, se("a", "a.example.com", "10.0.0.2"))
        os.utime(f, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        assert store.check() is True
        assert got == [store.current.version]


def test_same_content_gives_same_version(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", se("a", "a.example.com"))
    v1 = ConfigStore([tmp_path], watch=False).start().version
    v2 = ConfigStore([tmp_path], watch=False).start().version
    assert v1 == v2
