"""Service discovery: the ServiceEntry/WorkloadEntry registry and DNS resolution.

* :class:`Registry` (``registry.py``): immutable services and endpoints built
  from ServiceEntry and WorkloadEntry resources, with Istio's host lookup.
* :class:`DnsCache` and :class:`DnsResolver` (``dns.py``): background,
  TTL-aware resolution of endpoint hostnames.

Tier 2: imports ``inmesh.errors``, ``inmesh._clock`` and ``inmesh.config``
only, never another engine. Importing this package does no I/O and starts no
thread; dnspython and tenacity load on first use.
"""

from __future__ import annotations

from .dns import (
    DnsAnswer,
    DnsCache,
    DnsLookupError,
    DnsRecord,
    DnsResolver,
    Family,
    RefreshPolicy,
    RefreshSchedule,
    Resolver,
    Subscriber,
)
from .registry import (
    TLS_MODE_DISABLED,
    TLS_MODE_ISTIO,
    AddressKind,
    Endpoint,
    HostMatch,
    Port,
    Registry,
    Service,
)

__all__ = [
    "TLS_MODE_DISABLED",
    "TLS_MODE_ISTIO",
    "AddressKind",
    "DnsAnswer",
    "DnsCache",
    "DnsLookupError",
    "DnsRecord",
    "DnsResolver",
    "Endpoint",
    "Family",
    "HostMatch",
    "Port",
    "RefreshPolicy",
    "RefreshSchedule",
    "Registry",
    "Resolver",
    "Service",
    "Subscriber",
]
