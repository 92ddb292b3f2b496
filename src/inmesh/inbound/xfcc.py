"""``x-forwarded-client-cert`` (XFCC) as Envoy writes it, and a parser for it.

What an Istio sidecar gives the app on an mTLS connection (Envoy HCM,
``forward_client_cert_details: APPEND_FORWARD`` with
``set_current_client_cert_details {subject, uri, dns}``; Envoy
``ConnectionManagerUtility::mutateXfccRequestHeader``)::

    By=<server URI SAN>;Hash=<sha256 of the client cert DER, lower-case hex>;Subject="<subject>";URI=<client URI SAN>

* one ``By=`` per URI SAN of the *server's* certificate (none when it has none);
* ``Hash=`` the hex SHA-256 of the client's leaf certificate (DER);
* ``Subject=`` always present and always quoted, the client's subject DN in
  RFC 2253/4514 form (``""`` for Istio certificates, whose subject is empty);
* one ``URI=`` per URI SAN of the client's certificate, ``URI=`` (empty) when it
  has none;
* one ``DNS=`` per DNS SAN of the client's certificate (none when it has none).

Several proxies' elements are joined with ``,`` (APPEND_FORWARD appends this
hop's element to the incoming value). Envoy does not escape values (a comma or
semicolon in a SAN would be ambiguous); neither does this module, for
fidelity. :func:`parse` understands quoted values (``\\"`` escapes) so a value
written by other proxies (e.g. with ``Cert="..."``) can be read back.

Pure functions, standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "XFCC_HEADER",
    "XFCC_HEADER_BYTES",
    "XfccElement",
    "append",
    "element",
    "parse",
    "peer_part",
]

XFCC_HEADER = "x-forwarded-client-cert"
"""The header name (lower case, as ASGI carries header names)."""

XFCC_HEADER_BYTES = XFCC_HEADER.encode("ascii")
"""The header name as ASGI header bytes."""

XfccElement = list[tuple[str, str]]
"""One proxy's element: ``(key, value)`` pairs in order (keys may repeat: ``URI``, ``DNS``, ``By``)."""


def peer_part(
    sha256_hex: str,
    subject: str,
    uris: Sequence[str],
    dns: Sequence[str],
) -> str:
    """The client-certificate part of an element: ``Hash=...;Subject="...";URI=...[;DNS=...]``.

    It depends only on the client certificate, so callers cache it per certificate.
    """
    parts = [f"Hash={sha256_hex}", f'Subject="{subject}"']
    if uris:
        parts.extend(f"URI={u}" for u in uris)
    else:
        parts.append("URI=")
    parts.extend(f"DNS={d}" for d in dns)
    return ";".join(parts)


def element(by: Iterable[str], peer: str) -> str:
    """This hop's element: ``By=`` per server URI SAN, then :func:`peer_part`'s ``peer``."""
    by_part = ";".join(f"By={b}" for b in by)
    return f"{by_part};{peer}" if by_part else peer


def append(incoming: str | None, current: str) -> str:
    """APPEND_FORWARD: ``incoming`` (if any) then ``,`` then this hop's element."""
    if incoming is None or not incoming.strip():
        return current
    return f"{incoming},{current}"


def parse(value: str) -> list[XfccElement]:
    """Split an XFCC value into elements of ``(key, value)`` pairs.

    Quoted values may contain ``,``, ``;`` and ``=``; ``\\"`` and ``\\\\`` are
    unescaped. Keys keep their case (Envoy's keys are ``By``, ``Hash``,
    ``Cert``, ``Chain``, ``Subject``, ``URI``, ``DNS``). Raises
    :class:`ValueError` on an unterminated quote or a pair without ``=``.

    >>> parse('By=spiffe://a;Hash=ab;Subject="";URI=spiffe://b')
    [[('By', 'spiffe://a'), ('Hash', 'ab'), ('Subject', ''), ('URI', 'spiffe://b')]]
    """
    elements: list[XfccElement] = []
    current: XfccElement = []
    i, n = 0, len(value)
    while i < n:
        # key
        j = i
        while j < n and value[j] not in "=;,":
            j += 1
        key = value[i:j].strip()
        if j >= n or value[j] != "=":
            if key:
                raise ValueError(f"XFCC pair {key!r} has no '='")
            i = j + 1
            if j < n and value[j] == "," and current:
                elements.append(current)
                current = []
            continue
        i = j + 1
        # value
        if i < n and value[i] == '"':
            out = []
            i += 1
            while True:
                if i >= n:
                    raise ValueError("XFCC value has an unterminated quote")
                c = value[i]
                if c == "\\" and i + 1 < n:
                    out.append(value[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                out.append(c)
                i += 1
            val = "".join(out)
            while i < n and value[i] not in ";,":
                i += 1
        else:
            j = i
            while j < n and value[j] not in ";,":
                j += 1
            val = value[i:j].strip()
            i = j
        current.append((key, val))
        if i < n:
            if value[i] == ",":
                elements.append(current)
                current = []
            i += 1
    if current:
        elements.append(current)
    return elements
