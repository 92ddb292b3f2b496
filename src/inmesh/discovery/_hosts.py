"""Host names as a sidecar matches them: authority parsing and Kubernetes aliases.

Pure functions over strings; no inmesh imports. The rules come from istio/istio
``pilot/pkg/networking/core/httproute.go`` (``generateVirtualHostDomains``,
``GenerateAltVirtualHosts``, ``generateAltVirtualHostsForKubernetesService``):

* a sidecar ignores the port when it matches the ``Host`` header against
  virtual host domains, and compares case-insensitively;
* a host of the form ``<name>.<ns>.svc.<domain suffix>`` is also reachable as
  ``<name>.<ns>`` and ``<name>.<ns>.svc`` from every namespace, and as
  ``<name>`` from namespace ``<ns>``;
* any other host only matches itself (and itself with a trailing dot).
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

__all__ = ["canonical_ip", "is_ip", "kube_aliases", "split_authority"]


@lru_cache(maxsize=4096)
def split_authority(authority: str) -> tuple[str, int | None, bool] | None:
    """``authority`` -> ``(host, port, absolute)``, or ``None`` if it cannot be a host.

    ``host`` is lower-cased, without IPv6 brackets and without a trailing dot;
    ``absolute`` says whether there was a trailing dot (``api.example.com.``);
    ``port`` is ``None`` when the authority names none. Memoized: the same few
    authorities come back on every request.

    >>> split_authority("Backend.Default:8080")
    ('backend.default', 8080, False)
    >>> split_authority("[2001:DB8::1]:443")
    ('2001:db8::1', 443, False)
    """
    text = authority.strip().lower()
    if "@" in text:  # userinfo never reaches a Host header; be lenient anyway
        text = text.rpartition("@")[2]
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = _parse_port(rest[1:])
            if port is None:
                return None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _parse_port(port_text)
        if port is None:
            return None
    else:  # no port, or a bare IPv6 address
        host = text
    absolute = host.endswith(".") and host != "."
    if absolute:
        host = host[:-1]
    if not host or ".." in host or host.startswith("."):
        return None
    return host, port, absolute


def _parse_port(text: str) -> int | None:
    if not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (fast: ``inet_pton``, no objects)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def canonical_ip(text: str) -> str | None:
    """The canonical text of an IP address (``2001:db8::1``), or ``None`` if ``text`` is not one.

    A CIDR covering a single address (``10.0.0.1/32``) counts as that address,
    as Istio's ``convertServices`` does for ServiceEntry ``addresses``.
    """
    candidate = text.strip()
    if "/" in candidate:
        try:
            net = ipaddress.ip_network(candidate, strict=False)
        except ValueError:
            return None
        if net.num_addresses != 1:
            return None
        return str(net.network_address)
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def kube_aliases(hostname: str, domain_suffix: str) -> tuple[str, str, str] | None:
    """``(name, ns, "<name>.<ns>")`` for a Kubernetes-style host, else ``None``.

    ``hostname`` (lower case) qualifies when it ends with ``svc.<domain_suffix>``
    and has a ``.svc.`` after its first label, exactly as
    ``generateAltVirtualHostsForKubernetesService`` decides: the namespace is
    what lies between the first dot and the first ``.svc.``.

    >>> kube_aliases("reviews.bookinfo.svc.cluster.local", "cluster.local")
    ('reviews', 'bookinfo', 'reviews.bookinfo')
    >>> kube_aliases("api.example.com", "cluster.local") is None
    True
    """
    if hostname.startswith("*") or not hostname.endswith("svc." + domain_suffix):
        return None
    ih = hostname.find(".svc.")
    if ih <= 0:
        return None
    first_dot = hostname.find(".")
    if first_dot + 1 >= len(hostname) or first_dot + 1 > ih:
        return None
    return hostname[:first_dot], hostname[first_dot + 1 : ih], hostname[:ih]
