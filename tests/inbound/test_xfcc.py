"""XFCC formatting (Envoy APPEND_FORWARD) and parsing."""

from __future__ import annotations

import pytest

from inmesh.inbound import xfcc


def test_element_matches_istio_example() -> None:
    peer = xfcc.peer_part("4b69", "", ["spiffe://cluster.local/ns/foo/sa/sleep"], [])
    value = xfcc.element(["spiffe://cluster.local/ns/foo/sa/httpbin"], peer)
    assert value == (
        'By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=4b69;Subject="";'
        "URI=spiffe://cluster.local/ns/foo/sa/sleep"
    )


def test_element_without_uri_and_with_dns() -> None:
    peer = xfcc.peer_part("ab", "CN=client,O=acme", [], ["a.example", "b.example"])
    assert peer == 'Hash=ab;Subject="CN=client,O=acme";URI=;DNS=a.example;DNS=b.example'
    # no local URI SAN: no By
    assert xfcc.element([], peer) == peer


def test_append_forward() -> None:
    assert xfcc.append(None, "By=a") == "By=a"
    assert xfcc.append("", "By=a") == "By=a"
    assert xfcc.append("By=x;URI=y", "By=a") == "By=x;URI=y,By=a"


def test_parse_round_trip() -> None:
    value = 'By=spiffe://a;Hash=ab;Subject="CN=x, O=y;z";URI=spiffe://b,By=spiffe://c;Hash=cd;Subject="";URI='
    assert xfcc.parse(value) == [
        [("By", "spiffe://a"), ("Hash", "ab"), ("Subject", "CN=x, O=y;z"), ("URI", "spiffe://b")],
        [("By", "spiffe://c"), ("Hash", "cd"), ("Subject", ""), ("URI", "")],
    ]


def test_parse_escapes_and_cert() -> None:
    assert xfcc.parse(r'Subject="a \"q\" b";Cert="-----BEGIN%20CERT"') == [
        [("Subject", 'a "q" b'), ("Cert", "-----BEGIN%20CERT")]
    ]


@pytest.mark.parametrize("bad", ['Subject="open', "By"])
def test_parse_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        xfcc.parse(bad)


def test_parse_empty() -> None:
    assert xfcc.parse("") == []
