"""The name, host, label and address checks every kind shares.

Istio's rules come from istio/istio ``pkg/config/labels/instance.go``
(``IsDNS1123Label``, ``IsWildcardDNS1123Label``, ``validateTagKey``,
``Instance.Validate``) and ``pkg/config/validation/agent/validation.go``
(``ValidateWildcardDomain``, ``ValidateFQDN``, ``ValidateDNS1123Labels``,
``ValidateIPAddress``, ``ValidateIPSubnet``); the Kubernetes ones (lower case
only) from ``k8s.io/apimachinery/pkg/util/validation``.
"""

from __future__ import annotations

import pytest

from inmesh.config._schema import Reporter
from inmesh.config.validation._common import (
    check_export_to,
    check_k8s_dns1123_label,
    check_k8s_dns1123_subdomain,
    check_labels,
    check_port,
    check_selector_label,
    fqdn_problem,
    go_atoi,
    ip_subnet_problem,
    is_dns1123_label,
    is_ip,
    is_k8s_dns1123_subdomain,
    is_k8s_label,
    is_label_value,
    is_port_name,
    label_key_problem,
    wildcard_domain_problem,
)
from inmesh.errors import Severity

LONG_LABEL = "a" * 63
LONG_HOST = ".".join(["a" * 63] * 3) + "." + "b" * 63  # 255 characters


def _assert_problem(got: str | None, problem: str | None) -> None:
    """``problem`` None: the value passes; otherwise the reason given contains it."""
    if problem is None:
        assert got is None, got
    else:
        assert got is not None and problem in got, got


# ---------------------------------------------------------------------------
# Hosts: (host, None if Istio takes it, else a phrase of the problem)

WILDCARD_DOMAINS = [
    ("reviews", None),
    ("Reviews.Prod.SVC.cluster.local", None),  # Istio's labels accept upper case
    ("*", None),
    ("*.example.com", None),
    ("*foo.example.com", None),  # a partial wildcard label, '*' + label
    ("*-foo.example.com", None),  # or '*-' + label
    ("*a", None),
    ("example.com.", None),  # a trailing dot: an absolute name
    ("*.example.com.", None),
    ("*.", None),  # ValidateDNS1123Labels("") passes: an empty last label is allowed
    (f"{LONG_LABEL}.com", None),
    (LONG_HOST, None),
    ("xn--bcher-kva.example", None),
    ("example.9223372036854775808", None),  # beyond int64: Atoi fails, so not "numeric"
    ("example.1a", None),
    ("", "it is empty"),
    (LONG_HOST + "c", "256 characters long (at most 255)"),
    ("foo*.example.com", "a wildcard must be the whole first label or start it"),
    ("**.com", "a wildcard must be the whole first label"),
    ("*-.com", "a wildcard must be the whole first label"),
    ("a.*.com", "a wildcard may only start the host"),
    ("*.*.com", "a wildcard may only start the host"),
    ("example..com", "empty label"),
    (".example.com", "empty label"),
    ("example.com..", "empty label"),
    (f"{'a' * 64}.com", "longer than 63 characters"),
    ("foo_bar.com", "may only hold letters, digits and '-'"),
    ("-foo.com", "may only hold letters, digits and '-'"),
    ("foo-.com", "may only hold letters, digits and '-'"),
    ("ünïcode.com", "may only hold letters, digits and '-'"),
    ("a/b", "may only hold letters, digits and '-'"),
    ("example.123", "its last label '123' is all digits"),
    ("1.2.3.4", "its last label '4' is all digits"),
    ("*.123", "all digits"),
    ("example.+1", "all digits"),  # strconv.Atoi takes a sign
    ("example.-1", "all digits"),
    ("example.-9223372036854775808", "all digits"),  # the smallest int64
    ("example.007", "all digits"),
]


@pytest.mark.parametrize(("host", "problem"), WILDCARD_DOMAINS)
def test_wildcard_domain(host: str, problem: str | None) -> None:
    _assert_problem(wildcard_domain_problem(host), problem)


FQDNS = [
    ("example.com", None),
    ("example.com.", None),
    ("a", None),
    ("DB-1.Example.COM", None),
    (LONG_HOST, None),
    ("", "it is empty"),
    ("*", "a wildcard cannot be resolved"),
    ("*.example.com", "a wildcard cannot be resolved"),
    ("a..b", "empty label"),
    ("example.123", "all digits"),
    ("1.2.3.4", "all digits"),  # an IP is not an FQDN; callers try is_ip first
    (LONG_HOST + "c", "at most 255"),
    (f"{'a' * 64}.com", "longer than 63"),
]


@pytest.mark.parametrize(("name", "problem"), FQDNS)
def test_fqdn(name: str, problem: str | None) -> None:
    _assert_problem(fqdn_problem(name), problem)


# ---------------------------------------------------------------------------
# DNS labels and port names (Istio's: upper case allowed)

LABELS = [
    ("http", True),
    ("HTTP", True),
    ("http-api", True),
    ("Http-2", True),
    ("1", True),
    (LONG_LABEL, True),
    ("", False),
    ("a" * 64, False),
    ("-http", False),
    ("http-", False),
    ("http_api", False),
    ("grpc.web", False),
    ("*", False),
]


@pytest.mark.parametrize(("value", "ok"), LABELS)
def test_dns1123_label_and_port_name(value: str, ok: bool) -> None:
    assert is_dns1123_label(value) is ok
    assert is_port_name(value) is ok


# ---------------------------------------------------------------------------
# Label keys and values (labels.Instance.Validate)

LABEL_KEYS = [
    ("app", None),
    ("App", None),
    ("a.b/c", None),
    ("A.b/C_d", None),  # Istio's prefix labels accept upper case
    ("example.com/name", None),
    ("x" * 63, None),
    ("p" * 253 + "/x", None),
    ("a_b.c-d", None),
    ("", "is empty"),
    ("a/b/c", "more than one '/'"),
    ("/c", "is not [prefix/]name"),
    ("a/", "is not [prefix/]name"),
    ("a..b/c", "is not [prefix/]name"),
    ("-a", "is not [prefix/]name"),
    ("a_", "is not [prefix/]name"),
    ("*", "is not [prefix/]name"),
    ("a b", "is not [prefix/]name"),
    ("ü", "is not [prefix/]name"),
    ("x" * 64, "name part of 64 characters"),
    ("example.com/" + "n" * 64, "name part of 64 characters"),
    ("p" * 254 + "/x", "prefix of 254 characters"),
]


@pytest.mark.parametrize(("key", "problem"), LABEL_KEYS)
def test_label_key(key: str, problem: str | None) -> None:
    _assert_problem(label_key_problem(key), problem)


LABEL_VALUES = [
    ("", True),
    ("v1", True),
    ("V1", True),
    ("a_b", True),
    ("a.b-c", True),
    ("1", True),
    ("x" * 64, True),  # Istio sets no length limit (Kubernetes does: 63)
    ("x" * 300, True),
    ("-v", False),
    ("v-", False),
    ("_", False),
    ("*", False),
    ("a*b", False),
    ("a b", False),
    ("ü", False),
]


@pytest.mark.parametrize(("value", "ok"), LABEL_VALUES)
def test_label_value(value: str, ok: bool) -> None:
    assert is_label_value(value) is ok


def test_check_labels_reports_key_and_value_at_the_label() -> None:
    rep = Reporter()
    check_labels({"ok": "v1", "A.b/C": "X" * 100, "a/b/c": "-v", "": "v"}, ("labels",), rep)
    assert [(d.path, d.message) for d in rep.diagnostics] == [
        ("labels['a/b/c']", "label key 'a/b/c' is not [prefix/]name (it has more than one '/')"),
        ("labels['a/b/c']", "label value '-v' is not valid"),
        ("labels['']", "label key is empty"),
    ]
    assert all(d.severity is Severity.ERROR and d.fix for d in rep.diagnostics)


# ---------------------------------------------------------------------------
# Selector entries (validateWorkloadSelector and the CRD)

SELECTOR_LABELS = [
    ("app", "backend", 0),
    ("App", "X" * 63, 0),
    ("", "v", 1),
    ("a*", "v", 1),
    ("app", "back*", 1),
    ("app", "v" * 64, 1),
    ("", "*" * 64, 3),
]


@pytest.mark.parametrize(("key", "value", "errors"), SELECTOR_LABELS)
def test_selector_label(key: str, value: str, errors: int) -> None:
    rep = Reporter()
    assert check_selector_label(key, value, ("matchLabels", key), rep) is (errors == 0)
    assert len(rep.diagnostics) == errors


# ---------------------------------------------------------------------------
# Addresses

IPS = [
    ("10.0.0.1", True),
    ("0.0.0.0", True),
    ("2001:db8::1", True),
    ("::ffff:1.2.3.4", True),
    ("fe80::1%eth0", True),  # netip.ParseAddr keeps IPv6 zones
    ("01.2.3.4", False),  # no leading zeros
    ("1.2.3", False),
    ("1.2.3.4%eth0", False),  # zones are IPv6 only
    ("fe80::1%", False),  # an empty zone
    ("10.0.0.0/8", False),
    ("example.com", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "ok"), IPS)
def test_ip(text: str, ok: bool) -> None:
    assert is_ip(text) is ok


SUBNETS = [
    ("10.0.0.1", None),
    ("10.0.0.0/8", None),
    ("10.0.0.1/8", None),  # host bits may be set
    ("0.0.0.0/0", None),
    ("1.2.3.4/32", None),
    ("2001:db8::/32", None),
    ("::/0", None),
    ("::ffff:1.2.3.4/120", None),
    ("fe80::1%eth0", None),
    ("", "an IP address or a CIDR block"),
    ("abc", "an IP address or a CIDR block"),
    ("01.2.3.4", "an IP address or a CIDR block"),
    ("10.0.0.0/8/9", "an IP address or a CIDR block"),
    ("/8", "bad address part"),
    ("x/8", "bad address part"),
    ("10.0.0.0/33", "the prefix length is at most 32"),
    ("2001:db8::/129", "the prefix length is at most 128"),
    ("10.0.0.0/08", "bad prefix length"),
    ("10.0.0.0/+8", "bad prefix length"),
    ("10.0.0.0/-1", "bad prefix length"),
    ("10.0.0.0/", "bad prefix length"),
    ("10.0.0.0/ 8", "bad prefix length"),
    ("10.0.0.0/٨", "bad prefix length"),  # a non-ASCII digit
    ("10.0.0.0/255.0.0.0", "bad prefix length"),  # no netmasks
    ("10.0.0.0/" + "1" * 5000, "the prefix length is at most 32"),
    ("fe80::1%eth0/64", "a zone is not allowed"),
]


@pytest.mark.parametrize(("text", "problem"), SUBNETS)
def test_ip_subnet(text: str, problem: str | None) -> None:
    _assert_problem(ip_subnet_problem(text), problem)


@pytest.mark.parametrize(("port", "ok"), [(1, True), (65535, True), (0, False), (65536, False)])
def test_port(port: int, ok: bool) -> None:
    rep = Reporter()
    assert check_port(port, ("port",), rep) is ok
    assert len(rep.diagnostics) == (0 if ok else 1)


# ---------------------------------------------------------------------------
# Go's strconv.Atoi (numeric top-level domains, retryOn status codes)

ATOI = [
    ("0", 0),
    ("503", 503),
    ("+5", 5),
    ("-5", -5),
    ("007", 7),
    ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)),
    ("0" * 5000 + "1", 1),
    ("9223372036854775808", None),
    ("1" * 5000, None),  # out of range, and no ValueError from int()
    ("", None),
    ("+", None),
    ("1a", None),
    (" 1", None),
    ("1_000", None),
    ("٣", None),
]


@pytest.mark.parametrize(("text", "value"), ATOI)
def test_go_atoi(text: str, value: int | None) -> None:
    assert go_atoi(text) == value


# ---------------------------------------------------------------------------
# Kubernetes' names (lower case): metadata and inmesh hints


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("a.b-c.d", True),
        ("a" * 253, True),
        ("a" * 254, False),
        ("A", False),
        ("a..b", False),
        ("a_b", False),
        ("", False),
    ],
)
def test_k8s_subdomain(value: str, ok: bool) -> None:
    assert is_k8s_dns1123_subdomain(value) is ok
    rep = Reporter()
    assert check_k8s_dns1123_subdomain(value, ("metadata", "name"), rep) is ok
    assert len(rep.diagnostics) == (0 if ok else 1)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("default", True), (LONG_LABEL, True), ("a" * 64, False), ("Default", False), ("a.b", False)],
)
def test_k8s_label(value: str, ok: bool) -> None:
    rep = Reporter()
    assert check_k8s_dns1123_label(value, ("metadata", "namespace"), rep) is ok
    assert len(rep.diagnostics) == (0 if ok else 1)


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("app", "v1", True),
        ("App", "V_1", True),
        ("app", "", True),
        ("a.b/c", "v", True),
        ("A.b/c", "v", False),  # the prefix is lower case in Kubernetes
        ("p" * 254 + "/x", "v", False),
        ("x" * 64, "v", False),
        ("app", "x" * 64, False),  # Kubernetes caps values at 63
        ("app", "a b", False),
        ("/c", "v", False),
    ],
)
def test_k8s_label_syntax(key: str, value: str, ok: bool) -> None:
    assert is_k8s_label(key, value) is ok


# ---------------------------------------------------------------------------
# exportTo (validateExportTo)

EXPORTS = [
    # (values, service_entry, with_selector, messages of the errors)
    ([], False, False, []),
    (["."], False, False, []),
    (["*"], False, False, []),
    (["Other-NS"], False, False, []),  # labels.IsDNS1123Label: upper case allowed
    (["ns", "."], False, False, ["'.' and 'ns' both mean"]),
    ([".", "ns"], False, False, ["'.' and 'ns' both mean"]),
    (["a", "a"], False, False, ["'a' is listed twice"]),
    (["~"], False, False, ["only allowed for a ServiceEntry"]),
    (["~"], True, False, []),
    (["~", "a"], True, False, ["'~' exports to no namespace"]),
    (["*", "a"], False, False, ["'*' exports to all namespaces"]),
    (["foo_bar"], False, False, ["is not '.', '*' or a namespace name"]),
    (["foo_bar"], True, False, ["is not '.', '*', '~' or a namespace name"]),
    (["a" * 64], False, False, ["is not '.', '*' or a namespace name"]),
    (["."], False, True, []),
    (["ns"], False, True, []),
    (["other"], False, True, ["cannot be exported beyond its own namespace"]),
    (["*"], False, True, ["cannot be exported beyond its own namespace"]),
    ([".", "other"], False, True, ["can have just one entry"]),
]


@pytest.mark.parametrize(("values", "service_entry", "with_selector", "messages"), EXPORTS)
def test_export_to(
    values: list[str], service_entry: bool, with_selector: bool, messages: list[str]
) -> None:
    rep = Reporter()
    check_export_to(
        values,
        "ns",
        rep,
        kind="DestinationRule",
        service_entry=service_entry,
        with_selector=with_selector,
    )
    got = [d.message for d in rep.diagnostics]
    assert len(got) == len(messages), got
    for text, message in zip(messages, got, strict=True):
        assert text in message, got
