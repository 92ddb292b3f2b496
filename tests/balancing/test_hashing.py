from __future__ import annotations

import random

from inmesh.balancing import HashKey, HashPolicy, hash64
from inmesh.balancing.hashing import format_set_cookie, parse_cookie
from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import (
    ConsistentHashLB,
    HTTPCookie,
    HTTPCookieAttribute,
)
from inmesh.routing.match import RequestAttrs


def req(target: str = "/", **headers: str) -> RequestAttrs:
    return RequestAttrs.build(
        target=target, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


def test_hash64_is_stable_and_64_bit() -> None:
    assert hash64("abc") == hash64(b"abc")
    assert hash64("abc") != hash64("abd")
    assert hash64("abc", seed=1) != hash64("abc")
    assert 0 <= hash64("x") < 2**64


def test_header_policy() -> None:
    p = HashPolicy.from_settings(ConsistentHashLB(http_header_name="X-User"))
    rng = random.Random(0)
    assert p.key(req(x_user="alice"), None, rng) == HashKey(hash64("alice"))
    assert p.key(req(X_User="alice"), None, rng).value == hash64("alice")
    assert p.key(req(), None, rng) == HashKey(None, None)


def test_query_policy() -> None:
    p = HashPolicy.from_settings(ConsistentHashLB(http_query_parameter_name="user"))
    rng = random.Random(0)
    assert p.key(req("/?user=bob&x=1"), None, rng).value == hash64("bob")
    assert p.key(req("/?user="), None, rng).value == hash64("")  # present, empty
    assert p.key(req("/?x=1"), None, rng).value is None


def test_source_ip_policy() -> None:
    p = HashPolicy.from_settings(ConsistentHashLB(use_source_ip=True))
    rng = random.Random(0)
    assert p.key(req(), "10.1.2.3", rng).value == hash64("10.1.2.3")
    assert p.key(req(), None, rng).value is None


def test_no_key_configured() -> None:
    p = HashPolicy.from_settings(ConsistentHashLB())
    assert p.key(req(x="1"), "1.2.3.4", random.Random(0)) == HashKey()


def test_cookie_present() -> None:
    p = HashPolicy.from_settings(
        ConsistentHashLB(http_cookie=HTTPCookie(name="sid", ttl=Duration.of(60)))
    )
    rng = random.Random(0)
    k = p.key(req(cookie='a=1; sid="s-42"; b=2'), None, rng)
    assert k == HashKey(hash64("s-42"), None)
    assert p.key(req(cookie="sid=s-42"), None, rng).value == hash64("s-42")


def test_cookie_missing_without_ttl_gives_no_hash() -> None:
    p = HashPolicy.from_settings(ConsistentHashLB(http_cookie=HTTPCookie(name="sid")))
    assert p.key(req(cookie="other=1"), None, random.Random(0)) == HashKey()
    assert p.key(req(cookie="sid="), None, random.Random(0)) == HashKey()


def test_cookie_generated_with_set_cookie() -> None:
    cookie = HTTPCookie(
        name="sid",
        path="/app",
        ttl=Duration.parse("1h"),
        attributes=(
            HTTPCookieAttribute(name="SameSite", value="Strict"),
            HTTPCookieAttribute(name="Secure"),
        ),
    )
    p = HashPolicy.from_settings(ConsistentHashLB(http_cookie=cookie))
    k = p.key(req(), None, random.Random(7))
    expected_value = f"{random.Random(7).randrange(0, 1 << 64):016x}"
    assert k.value == hash64(expected_value)
    assert k.set_cookie == (
        f'sid="{expected_value}"; Max-Age=3600; Path=/app; SameSite=Strict; Secure; HttpOnly'
    )
    # the client sends the cookie back: same hash, nothing generated
    assert p.key(req(cookie=f"sid={expected_value}"), None, random.Random(1)) == HashKey(k.value)


def test_session_cookie_has_no_max_age() -> None:
    p = HashPolicy.from_settings(
        ConsistentHashLB(http_cookie=HTTPCookie(name="sid", ttl=Duration.parse("0s")))
    )
    k = p.key(req(), None, random.Random(3))
    assert k.set_cookie is not None
    assert "Max-Age" not in k.set_cookie and "Path" not in k.set_cookie
    assert k.set_cookie.endswith("; HttpOnly")


def test_parse_and_format_cookie() -> None:
    assert parse_cookie("a=1; b=2", "b") == "2"
    assert parse_cookie("a=1,b=2", "b") == "2"  # two cookie headers joined
    assert parse_cookie("ab=1", "a") is None
    assert parse_cookie('a="x y"', "a") == "x y"
    assert format_set_cookie("n", "v") == 'n="v"; HttpOnly'
