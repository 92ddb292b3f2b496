"""Fixtures for the discovery tests: YAML helpers and a real dnsmasq on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inmesh.config.load import load_text
from inmesh.discovery import DnsResolver, Registry

DNSMASQ = shutil.which("dnsmasq") or next(
    (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.access(p, os.X_OK)), None
)
DOMAIN = "inmesh.test"


def build_registry(text: str, **kwargs: Any) -> Registry:
    """A registry from Istio YAML (ServiceEntry and WorkloadEntry documents)."""
    result = load_text(textwrap.dedent(text), file="registry.yaml")
    assert not result.errors, "\n".join(str(e) for e in result.errors)
    ses = [r for r in result.resources if r.kind == "ServiceEntry"]
    wes = [r for r in result.resources if r.kind == "WorkloadEntry"]
    return Registry.build(ses, wes, **kwargs)


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class Dnsmasq:
    """A dnsmasq answering for ``*.inmesh.test`` from a hosts file the test edits.

    Names not in the file get NXDOMAIN (``--local``); TTL is 1 s (``--local-ttl``).
    """

    def __init__(self, directory: Path) -> None:
        self.hosts = directory / "hosts"
        self.log = directory / "dnsmasq.log"
        self.hosts.write_text("")
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        assert DNSMASQ is not None
        return [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={self.port}",
            f"--addn-hosts={self.hosts}",
            f"--local=/{DOMAIN}/",
            "--local-ttl=1",
            "--user=root",  # no-op unless root: then do not drop privileges
            "--pid-file=",
            "--log-facility=-",
        ]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        import dns.message
        import dns.query

        deadline = time.monotonic() + 5.0
        query = dns.message.make_query(f"probe.{DOMAIN}", "A")
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log.read_text()}")
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"dnsmasq did not start: {self.log.read_text()}")

    def set_hosts(self, text: str, *, reload: bool = True) -> None:
        """Replace the hosts file (``"<ip> <name>"`` lines); SIGHUP makes dnsmasq re-read it."""
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        tmp.replace(self.hosts)
        if reload and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.1)  # let it re-read before the next query

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def resolver(self, **kwargs: Any) -> DnsResolver:
        kwargs.setdefault("timeout", 0.5)
        kwargs.setdefault("hosts_file", None)
        return DnsResolver(["127.0.0.1"], port=self.port, **kwargs)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    """A running dnsmasq on a free loopback port (the test is skipped without dnsmasq)."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed (Debian/Ubuntu: apt-get install dnsmasq-base)")
    server = Dnsmasq(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
