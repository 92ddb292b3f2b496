"""Consistent-hash keys: what a request hashes to (``consistentHash``).

Istio turns the hash key of ``ConsistentHashLB`` into an Envoy route
``hash_policy`` (istio/istio ``pilot/pkg/networking/core/route``
``consistentHashToHashPolicy``); Envoy computes the hash per request
(envoyproxy/envoy ``source/common/http/hash_policy.cc``) and hands it to the
ring hash or Maglev balancer:

* ``httpHeaderName``: the header's value (names are looked up lower-case);
  no header, no hash.
* ``httpQueryParameterName``: the first value of the query parameter, even an
  empty one; no parameter, no hash.
* ``useSourceIp``: the downstream address. In-process the "downstream" is
  this process, so the driver passes the address it connects from; ``None``
  means no hash.
* ``httpCookie{name, path, ttl, attributes}``: the cookie's value from the
  ``cookie`` header (``; ``-separated pairs, surrounding double quotes
  removed; an empty value counts as absent). When the cookie is absent and
  ``ttl`` is set, Envoy *generates* one and hashes the generated value
  (route ``HashPolicy.Cookie``: "If the cookie is not present and ttl below
  is not set, no hash will be produced", https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto).
  The ``Set-Cookie`` value it adds to the response is built by
  ``Http::Utility::makeSetCookieValue`` (``source/common/http/utility.cc``)::

      <name>="<value>"[; Max-Age=<ttl seconds>][; Path=<path>][; <attr>[=<value>]]...; HttpOnly

  The value is double-quoted; ``Max-Age`` is left out when the ttl is 0s (a
  session cookie) and ``Path`` when no path is configured; attributes come
  in order before ``HttpOnly``, which is always added (the router passes
  ``httponly = true``). Envoy's value is the 16-digit hex of xxHash64 of the
  downstream connection's remote + local address (router.h
  ``addDownstreamSetCookie``); in-process there is no downstream connection,
  so inmesh uses 64 random bits from the injected random source, formatted
  the same way.

A request without a hash goes to a random host (envoyproxy/envoy
``thread_aware_lb_impl.cc``: "If there is no hash in the context, just choose
a random value").

The hash function is 64-bit BLAKE2b (:func:`hash64`), not Envoy's xxHash64:
placement on the ring differs from Envoy's, stickiness and balance do not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inmesh._clock import Random
from inmesh.config.resources.destination_rule import ConsistentHashLB

if TYPE_CHECKING:
    from inmesh.routing.match import RequestAttrs

__all__ = ["HashKey", "HashPolicy", "format_set_cookie", "hash64", "parse_cookie"]


def hash64(data: str | bytes, seed: int = 0) -> int:
    """A stable 64-bit hash of ``data`` (BLAKE2b, 8-byte digest; ``seed`` selects a variant)."""
    raw = data.encode() if isinstance(data, str) else data
    if seed:
        digest = hashlib.blake2b(raw, digest_size=8, salt=seed.to_bytes(8, "little")).digest()
    else:
        digest = hashlib.blake2b(raw, digest_size=8).digest()
    return int.from_bytes(digest, "little")


def parse_cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``cookie`` header (quotes removed), or ``None``.

    Pairs are separated by ``;`` (and by ``,`` where several cookie headers
    were joined); the first pair with the name wins, as in Envoy's
    ``Http::Utility::parseCookieValue``.
    """
    for part in header.replace(",", ";").split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def format_set_cookie(
    name: str,
    value: str,
    *,
    path: str = "",
    max_age: int = 0,
    attributes: tuple[tuple[str, str], ...] = (),
) -> str:
    """A ``Set-Cookie`` value the way Envoy writes it (see the module docstring)."""
    parts = [f'{name}="{value}"']
    if max_age:
        parts.append(f"Max-Age={max_age}")
    if path:
        parts.append(f"Path={path}")
    for attr, attr_value in attributes:
        parts.append(f"{attr}={attr_value}" if attr_value else attr)
    parts.append("HttpOnly")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class HashKey:
    """A request's hash: ``value`` (64-bit, ``None`` when the key is missing)
    and ``set_cookie``, the ``Set-Cookie`` value to add to the response when
    a cookie was generated."""

    value: int | None = None
    set_cookie: str | None = None


_NO_HASH = HashKey()


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """How a request's hash key is computed, from a ``ConsistentHashLB``.

    ``kind`` is ``"header"``, ``"query"``, ``"source_ip"``, ``"cookie"`` or
    ``""`` (no key configured: every request gets a random host). ``name`` is
    the header (lower case), parameter or cookie name; ``cookie_ttl`` is
    ``None`` when the cookie is never generated.
    """

    kind: str = ""
    name: str = ""
    cookie_path: str = ""
    cookie_ttl: float | None = None
    cookie_attributes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: ConsistentHashLB) -> HashPolicy:
        if settings.http_header_name is not None:
            return cls("header", settings.http_header_name.lower())
        if settings.http_cookie is not None:
            cookie = settings.http_cookie
            return cls(
                "cookie",
                cookie.name or "",
                cookie_path=cookie.path or "",
                cookie_ttl=None if cookie.ttl is None else cookie.ttl.seconds,
                cookie_attributes=tuple((a.name or "", a.value or "") for a in cookie.attributes),
            )
        if settings.use_source_ip:
            return cls("source_ip")
        if settings.http_query_parameter_name is not None:
            return cls("query", settings.http_query_parameter_name)
        return cls()

    def key(self, attrs: RequestAttrs, source_ip: str | None, rng: Random) -> HashKey:
        """The hash key of one request; ``rng`` draws a generated cookie's value."""
        kind = self.kind
        if kind == "header":
            header = attrs.headers.get(self.name)
            return _NO_HASH if header is None else HashKey(hash64(header))
        if kind == "query":
            param = attrs.params.get(self.name)
            return _NO_HASH if param is None else HashKey(hash64(param))
        if kind == "source_ip":
            return HashKey(hash64(source_ip)) if source_ip else _NO_HASH
        if kind == "cookie":
            return self._cookie_key(attrs, rng)
        return _NO_HASH

    def _cookie_key(self, attrs: RequestAttrs, rng: Random) -> HashKey:
        header = attrs.headers.get("cookie")
        value = parse_cookie(header, self.name) if header else None
        if value:
            return HashKey(hash64(value))
        if self.cookie_ttl is None:
            return _NO_HASH
        generated = f"{rng.randrange(0, 1 << 64):016x}"
        set_cookie = format_set_cookie(
            self.name,
            generated,
            path=self.cookie_path,
            max_age=int(self.cookie_ttl),
            attributes=self.cookie_attributes,
        )
        return HashKey(hash64(generated), set_cookie)
