"""Resolving one hostname: the :class:`Resolver` seam and its dnspython implementation.

dnspython is imported on first use. Re-exported by :mod:`inmesh.discovery.dns`,
which is where to import these names from.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from inmesh.errors import InmeshError

from ._hosts import is_ip

__all__ = ["DnsAnswer", "DnsLookupError", "DnsResolver", "Family", "Resolver"]

Family = Literal["v4_preferred", "v4_only", "v6_only", "all"]
"""Which records to ask for, as Envoy's ``dns_lookup_family``: A then AAAA if
there is no A (``v4_preferred``), only A, only AAAA, or both (``all``)."""


class DnsLookupError(InmeshError):
    """A hostname could not be resolved.

    ``transient`` is true for failures worth retrying soon (timeouts, SERVFAIL,
    refused, network errors) and false for answers (NXDOMAIN, no A/AAAA record).
    """

    def __init__(self, hostname: str, reason: str, *, transient: bool) -> None:
        self.hostname = hostname
        self.reason = reason
        self.transient = transient
        super().__init__(f"cannot resolve {hostname!r}: {reason}")


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The addresses of a hostname, in the order the server gave them, and their TTL (s)."""

    hostname: str
    addresses: tuple[str, ...]
    ttl: float


class Resolver(Protocol):
    """Resolves one hostname; the seam :class:`DnsCache` uses (fakes plug in here).

    ``resolve`` may block (it runs on the cache's thread) and raises
    :class:`DnsLookupError` when there is no usable answer.
    """

    def resolve(self, hostname: str) -> DnsAnswer:
        """The addresses of ``hostname``, or raise :class:`DnsLookupError`."""
        ...


class DnsResolver:
    """A :class:`Resolver` backed by dnspython.

    * ``nameservers``: IP addresses to ask, on ``port``; ``None`` reads the
      system's ``/etc/resolv.conf`` (on first use, not at construction).
    * ``timeout``: the budget of one lookup in seconds, all servers included.
    * ``family``: see :data:`Family`.
    * ``hosts_file``: consulted first, like the system resolver does
      (``localhost`` keeps working); its answers have TTL ``hosts_ttl``.
      ``None`` to ask DNS only.

    Names are looked up as absolute names (no search domains). Thread-safe.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = 2.0,
        family: Family = "v4_preferred",
        hosts_file: str | os.PathLike[str] | None = "/etc/hosts",
        hosts_ttl: float = 30.0,
    ) -> None:
        """Configure; no I/O happens until the first :meth:`resolve`."""
        if family not in ("v4_preferred", "v4_only", "v6_only", "all"):
            raise ValueError(f"unknown address family {family!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._nameservers = tuple(nameservers) if nameservers is not None else None
        self._port = port
        self._timeout = timeout
        self._family: Family = family
        self._hosts = _HostsFile(os.fspath(hosts_file)) if hosts_file is not None else None
        self._hosts_ttl = hosts_ttl
        self._lock = threading.Lock()
        self._dns: Any = None

    def __repr__(self) -> str:
        where = ",".join(self._nameservers) if self._nameservers is not None else "resolv.conf"
        return f"<DnsResolver {where} port={self._port} family={self._family}>"

    def resolve(self, hostname: str) -> DnsAnswer:
        """The addresses of ``hostname``; raises :class:`DnsLookupError`."""
        name = hostname.strip().rstrip(".").lower()
        if not name:
            raise DnsLookupError(hostname, "empty hostname", transient=False)
        if is_ip(name):
            return DnsAnswer(name, (name,), math.inf)
        if self._hosts is not None:
            found = self._hosts.lookup(name, self._family)
            if found:
                return DnsAnswer(name, found, self._hosts_ttl)
        resolver = self._resolver(name)
        if self._family == "v4_only":
            kinds: tuple[tuple[str, ...], ...] = (("A",),)
        elif self._family == "v6_only":
            kinds = (("AAAA",),)
        elif self._family == "all":
            kinds = (("A", "AAAA"),)
        else:
            kinds = (("A",), ("AAAA",))
        for rdtypes in kinds:  # try each group in turn; the first with records wins
            addresses: list[str] = []
            ttl = math.inf
            for rdtype in rdtypes:
                got = self._query(resolver, name, rdtype)
                if got is not None:
                    addresses.extend(got[0])
                    ttl = min(ttl, got[1])
            if addresses:
                return DnsAnswer(name, tuple(dict.fromkeys(addresses)), ttl)
        wanted = "/".join(t for group in kinds for t in group)
        raise DnsLookupError(name, f"no {wanted} record", transient=False)

    def _resolver(self, name: str) -> Any:
        with self._lock:
            if self._dns is None:
                import dns.resolver

                try:
                    if self._nameservers is None:
                        res = dns.resolver.Resolver(configure=True)
                    else:
                        res = dns.resolver.Resolver(configure=False)
                        res.nameservers = list(self._nameservers)
                except Exception as exc:  # NoResolverConfiguration, unreadable file
                    raise DnsLookupError(
                        name, f"no DNS configuration: {exc}", transient=True
                    ) from exc
                res.port = self._port
                res.timeout = self._timeout
                res.lifetime = self._timeout
                res.cache = None
                self._dns = res
            return self._dns

    def _query(self, resolver: Any, name: str, rdtype: str) -> tuple[list[str], float] | None:
        """``(addresses, ttl)`` of one record type; ``None`` when the name has none of it."""
        import dns.exception
        import dns.resolver

        try:
            answer = resolver.resolve(name + ".", rdtype, search=False, lifetime=self._timeout)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN as exc:
            raise DnsLookupError(name, "NXDOMAIN (no such name)", transient=False) from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsLookupError(name, f"no server answered ({exc})", transient=True) from exc
        except dns.exception.Timeout as exc:
            raise DnsLookupError(
                name, f"timed out after {self._timeout:g}s", transient=True
            ) from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsLookupError(name, f"{type(exc).__name__}: {exc}", transient=True) from exc
        chain = getattr(answer, "chaining_result", None)
        ttl = float(chain.minimum_ttl if chain is not None else answer.rrset.ttl)
        return [rr.address for rr in answer], ttl


class _HostsFile:
    """``/etc/hosts``-style file, re-read when it changes (by mtime and size)."""

    __slots__ = ("_lock", "_names", "_path", "_stamp")

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._names: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def lookup(self, name: str, family: Family) -> tuple[str, ...]:
        try:
            st = os.stat(self._path)
        except OSError:
            return ()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._names = self._read()
                self._stamp = stamp
            found = self._names.get(name, ())
        v4 = tuple(a for a in found if ":" not in a)
        v6 = tuple(a for a in found if ":" in a)
        if family == "v4_only":
            return v4
        if family == "v6_only":
            return v6
        if family == "all":
            return v4 + v6
        return v4 or v6

    def _read(self) -> dict[str, tuple[str, ...]]:
        names: dict[str, list[str]] = {}
        try:
            with open(self._path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    fields = line.split("#", 1)[0].split()
                    if len(fields) < 2 or not is_ip(fields[0].split("%", 1)[0]):
                        continue
                    for host in fields[1:]:
                        addrs = names.setdefault(host.lower().rstrip("."), [])
                        if fields[0] not in addrs:
                            addrs.append(fields[0])
        except OSError:
            return {}
        return {k: tuple(v) for k, v in names.items()}
