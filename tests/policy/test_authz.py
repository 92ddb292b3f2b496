"""AuthorizationPolicy evaluation: every field, every `when` key, precedence, scope, ids.

Policies are written as YAML and read through ``inmesh.config.load.load_text``
(the real parsing and validation path); the few cases Istio's validation
refuses but its translation still handles are built as resources directly.
Expected behaviour: istio/istio ``pilot/pkg/security/authz/{model,matcher,builder}``
and Envoy's RBAC filter, as summarised in docs/authorization.md.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest

from inmesh.config.load import load_text
from inmesh.config.resources._common import Metadata, Resource
from inmesh.config.resources.authorization_policy import (
    Action,
    AuthorizationPolicySpec,
    Condition,
    ExtensionProvider,
    Operation,
    Rule,
    RuleFrom,
    RuleTo,
    Source,
)
from inmesh.config.snapshot import ConfigOptions, build_snapshot
from inmesh.identity.spiffe import SpiffeId
from inmesh.model import Workload
from inmesh.policy._authz_index import Engine
from inmesh.policy._authz_match import TrustDomainBundle, compile_rule
from inmesh.policy.authz import (
    BAD_CUSTOM_ACTION_SUFFIX,
    EXT_AUTHZ_DENIED,
    EXT_AUTHZ_ERROR,
    RBAC_DENIED_BODY,
    UAEX,
    AuthorizationEngine,
    AuthzDecision,
    AuthzEvaluator,
    AuthzRequest,
    DryRunResult,
    ExternalAuthorizer,
    ExternalDecision,
    parse_go_bool,
    policy_id,
    rbac_response_detail,
    remote_address,
)
from inmesh.policy.normalize import normalize_path

ROOT = "istio-system"
WL = Workload("httpbin", "foo", service_account="httpbin", labels={"app": "httpbin", "v": "1"})
CLIENT = SpiffeId.for_workload("bar", "client")
NONE_DETAIL = "rbac_access_denied_matched_policy[none]"


# -- helpers -------------------------------------------------------------------------------------


def doc(
    spec: dict[str, Any] | None = None,
    *,
    name: str = "p",
    namespace: str = "foo",
    annotations: dict[str, str] | None = None,
) -> str:
    """One AuthorizationPolicy as YAML (JSON is YAML)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": meta,
        "spec": spec if spec is not None else {},
    }
    return json.dumps(body)


def load(*docs: str) -> list[Resource[Any]]:
    result = load_text("\n---\n".join(docs))
    assert not result.errors, [str(e) for e in result.errors]
    return list(result.resources)


def evaluator(*docs: str, workload: Workload = WL, **kw: Any) -> AuthzEvaluator:
    return AuthorizationEngine.compile(load(*docs), workload, root_namespace=ROOT, **kw)


def req(**kw: Any) -> AuthzRequest:
    values: dict[str, Any] = {
        "peer": CLIENT,
        "source_ip": "10.1.2.3",
        "destination_ip": "10.0.0.5",
        "destination_port": 8080,
        "method": "GET",
        "host": "httpbin.foo:8000",
        "path": "/get",
        "sni": "outbound_.8000_._.httpbin.foo.svc.cluster.local",
        "headers": {"x-user": "alice", "user-agent": "curl/8"},
    }
    values.update(kw)
    return AuthzRequest(**values)


def allows(rule: dict[str, Any], **kw: Any) -> bool:
    """Whether an ALLOW policy with this one rule lets the request through."""
    ev = evaluator(doc({"rules": [rule]}))
    return ev.evaluate(req(**kw)).allowed


def src(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def op(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict:
    cond: dict[str, Any] = {"key": key}
    if values is not None:
        cond["values"] = values
    if not_values is not None:
        cond["notValues"] = not_values
    return {"when": [cond]}


def resource(spec: AuthorizationPolicySpec, name: str = "p", namespace: str = "foo",
             annotations: dict[str, str] | None = None) -> Resource[Any]:  # fmt: skip
    """A resource built without validation (for what Istio refuses but still translates)."""
    return Resource(
        "AuthorizationPolicy",
        "security.istio.io/v1",
        Metadata(name=name, namespace=namespace, annotations=annotations or {}),
        spec,
    )


PLAIN: dict[str, Any] = {"peer": None}


# -- Source fields --------------------------------------------------------------------------------

SOURCE_CASES = [
    # principals
    ("principal exact", src(principals=["cluster.local/ns/bar/sa/client"]), {}, True),
    ("principal other", src(principals=["cluster.local/ns/bar/sa/other"]), {}, False),
    ("principal prefix", src(principals=["cluster.local/ns/bar/*"]), {}, True),
    ("principal prefix miss", src(principals=["cluster.local/ns/baz/*"]), {}, False),
    ("principal suffix", src(principals=["*/sa/client"]), {}, True),
    ("principal suffix miss", src(principals=["*/sa/clien"]), {}, False),
    ("principal presence", src(principals=["*"]), {}, True),
    ("principal presence plaintext", src(principals=["*"]), PLAIN, False),
    ("principal exact plaintext", src(principals=["cluster.local/ns/bar/sa/client"]), PLAIN, False),
    ("principal spiffe:// form never matches",
     src(principals=["spiffe://cluster.local/ns/bar/sa/client"]), {}, False),
    ("principal * in the middle is literal", src(principals=["cluster.local/ns/*/sa/client"]), {},
     False),
    ("principal list is OR", src(principals=["x/ns/a/sa/b", "cluster.local/ns/bar/sa/client"]),
     {}, True),
    ("notPrincipals match", src(notPrincipals=["cluster.local/ns/bar/sa/client"]), {}, False),
    ("notPrincipals other", src(notPrincipals=["cluster.local/ns/bar/sa/other"]), {}, True),
    ("notPrincipals presence", src(notPrincipals=["*"]), {}, False),
    ("notPrincipals plaintext", src(notPrincipals=["cluster.local/ns/bar/sa/client"]), PLAIN, True),
    ("notPrincipals presence plaintext", src(notPrincipals=["*"]), PLAIN, True),
    # namespaces
    ("namespace exact", src(namespaces=["bar"]), {}, True),
    ("namespace other", src(namespaces=["baz"]), {}, False),
    ("namespace partial is no match", src(namespaces=["ba"]), {}, False),
    ("namespace prefix glob", src(namespaces=["b*"]), {}, True),
    ("namespace suffix glob", src(namespaces=["*r"]), {}, True),
    ("namespace middle glob", src(namespaces=["b*r"]), {}, True),
    ("namespace middle glob miss", src(namespaces=["b*z"]), {}, False),
    ("namespace plaintext", src(namespaces=["bar"]), PLAIN, False),
    ("notNamespaces match", src(notNamespaces=["bar"]), {}, False),
    ("notNamespaces other", src(notNamespaces=["baz"]), {}, True),
    ("notNamespaces plaintext", src(notNamespaces=["bar"]), PLAIN, True),
    ("namespace in a longer SPIFFE path",
     src(namespaces=["bar"]), {"peer": SpiffeId("cluster.local", "/ns/bar/x/sa/client")}, True),
    # serviceAccounts
    ("serviceAccount ns/sa", src(serviceAccounts=["bar/client"]), {}, True),
    ("serviceAccount other sa", src(serviceAccounts=["bar/other"]), {}, False),
    ("serviceAccount is not a prefix", src(serviceAccounts=["bar/client"]),
     {"peer": SpiffeId.for_workload("bar", "client-2")}, False),
    ("serviceAccount defaults to the policy namespace", src(serviceAccounts=["client"]), {}, False),
    ("serviceAccount in the policy namespace", src(serviceAccounts=["client"]),
     {"peer": SpiffeId.for_workload("foo", "client")}, True),
    ("serviceAccount with extra segments", src(serviceAccounts=["bar/client"]),
     {"peer": SpiffeId("td", "/ns/bar/x/sa/client/y")}, True),
    ("serviceAccount plaintext", src(serviceAccounts=["bar/client"]), PLAIN, False),
    ("notServiceAccounts match", src(notServiceAccounts=["bar/client"]), {}, False),
    ("notServiceAccounts other", src(notServiceAccounts=["bar/x"]), {}, True),
    ("notServiceAccounts plaintext", src(notServiceAccounts=["bar/client"]), PLAIN, True),
    # trustDomains
    ("trustDomain exact", src(trustDomains=["cluster.local"]), {}, True),
    ("trustDomain other", src(trustDomains=["example.org"]), {}, False),
    ("trustDomain presence", src(trustDomains=["*"]), {}, True),
    ("trustDomain suffix", src(trustDomains=["*.local"]), {}, True),
    ("trustDomain prefix", src(trustDomains=["cluster*"]), {}, True),
    ("trustDomain prefix miss", src(trustDomains=["clusters*"]), {}, False),
    ("trustDomain plaintext", src(trustDomains=["*"]), PLAIN, False),
    ("notTrustDomains match", src(notTrustDomains=["cluster.local"]), {}, False),
    ("notTrustDomains plaintext", src(notTrustDomains=["cluster.local"]), PLAIN, True),
    # ipBlocks (direct peer)
    ("ipBlock exact", src(ipBlocks=["10.1.2.3"]), {}, True),
    ("ipBlock cidr", src(ipBlocks=["10.1.0.0/16"]), {}, True),
    ("ipBlock cidr with host bits", src(ipBlocks=["10.1.9.9/16"]), {}, True),
    ("ipBlock miss", src(ipBlocks=["10.2.0.0/16"]), {}, False),
    ("ipBlock ipv6", src(ipBlocks=["2001:db8::/32"]), {"source_ip": "2001:db8::7"}, True),
    ("ipBlock ipv4 rule vs ipv6 peer", src(ipBlocks=["10.0.0.0/8"]), {"source_ip": "2001:db8::7"},
     False),
    ("ipBlock ipv4-mapped peer", src(ipBlocks=["10.1.0.0/16"]), {"source_ip": "::ffff:10.1.2.3"},
     True),
    ("ipBlock ignores remote ip", src(ipBlocks=["203.0.113.0/24"]), {"remote_ip": "203.0.113.9"},
     False),
    ("ipBlock without source ip", src(ipBlocks=["10.0.0.0/8"]), {"source_ip": ""}, False),
    ("notIpBlocks match", src(notIpBlocks=["10.1.0.0/16"]), {}, False),
    ("notIpBlocks other", src(notIpBlocks=["10.2.0.0/16"]), {}, True),
    # remoteIpBlocks (original client)
    ("remoteIpBlock", src(remoteIpBlocks=["203.0.113.0/24"]), {"remote_ip": "203.0.113.9"}, True),
    ("remoteIpBlock defaults to source ip", src(remoteIpBlocks=["10.1.2.3"]), {}, True),
    ("remoteIpBlock miss", src(remoteIpBlocks=["10.1.2.3"]), {"remote_ip": "203.0.113.9"}, False),
    ("notRemoteIpBlocks", src(notRemoteIpBlocks=["203.0.113.0/24"]), {"remote_ip": "203.0.113.9"},
     False),
    # requestPrincipals: JWT is never present
    ("requestPrincipals never match", src(requestPrincipals=["*"]), {}, False),
    ("requestPrincipals exact never match", src(requestPrincipals=["iss/sub"]), {}, False),
    ("notRequestPrincipals always match", src(notRequestPrincipals=["*"]), {}, True),
    ("notRequestPrincipals always match plaintext", src(notRequestPrincipals=["iss/sub"]), PLAIN,
     True),
    # ANDs and ORs
    ("fields of a source AND", src(principals=["*"], namespaces=["bar"], ipBlocks=["10.0.0.0/8"]),
     {}, True),
    ("fields of a source AND (one fails)", src(principals=["*"], namespaces=["baz"]), {}, False),
    ("values and notValues together", src(namespaces=["b*"], notNamespaces=["bar"]), {}, False),
    ("from entries OR",
     {"from": [{"source": {"namespaces": ["baz"]}}, {"source": {"ipBlocks": ["10.0.0.0/8"]}}]}, {},
     True),
    ("empty from list means any source", {"from": [], "to": [{"operation": {"methods": ["GET"]}}]},
     PLAIN, True),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "kw", "expected"), [c[1:] for c in SOURCE_CASES],
                         ids=[c[0] for c in SOURCE_CASES])  # fmt: skip
def test_source_fields(rule: dict[str, Any], kw: dict[str, Any], expected: bool) -> None:
    assert allows(rule, **kw) is expected


# -- Operation fields --------------------------------------------------------------------------

OPERATION_CASES = [
    ("host exact", op(hosts=["httpbin.foo:8000"]), {}, True),
    ("host case-insensitive", op(hosts=["HTTPBIN.Foo:8000"]), {}, True),
    ("host without the port the client sent", op(hosts=["httpbin.foo"]), {}, False),
    ("host without port", op(hosts=["httpbin.foo"]), {"host": "httpbin.foo"}, True),
    ("host prefix", op(hosts=["httpbin*"]), {}, True),
    ("host suffix", op(hosts=["*:8000"]), {}, True),
    ("host suffix case-insensitive", op(hosts=["*.FOO:8000"]), {"host": "a.foo:8000"}, True),
    ("host presence", op(hosts=["*"]), {}, True),
    ("host presence without host", op(hosts=["*"]), {"host": ""}, False),
    ("notHosts", op(notHosts=["httpbin*"]), {}, False),
    ("notHosts other", op(notHosts=["other*"]), {}, True),
    ("port", op(ports=["8080"]), {}, True),
    ("port miss", op(ports=["9090"]), {}, False),
    ("ports OR", op(ports=["9090", "8080"]), {}, True),
    ("notPorts", op(notPorts=["8080"]), {}, False),
    ("method", op(methods=["GET"]), {}, True),
    ("method case-sensitive", op(methods=["get"]), {}, False),
    ("method prefix", op(methods=["G*"]), {}, True),
    ("method suffix", op(methods=["*ET"]), {}, True),
    ("method presence", op(methods=["*"]), {}, True),
    ("methods OR", op(methods=["POST", "GET"]), {}, True),
    ("notMethods", op(notMethods=["GET"]), {}, False),
    ("notMethods other", op(notMethods=["POST"]), {}, True),
    ("path exact", op(paths=["/get"]), {}, True),
    ("path trailing slash differs", op(paths=["/get/"]), {}, False),
    ("path case-sensitive", op(paths=["/GET"]), {}, False),
    ("path prefix", op(paths=["/g*"]), {}, True),
    ("path suffix", op(paths=["*et"]), {}, True),
    ("path presence", op(paths=["*"]), {}, True),
    ("path ignores the query", op(paths=["/get"]), {"path": "/get?a=/admin"}, True),
    ("path ignores a fragment", op(paths=["/get"]), {"path": "/get#x"}, True),
    ("path * in the middle is literal", op(paths=["/a*b/c"]), {"path": "/axb/c"}, False),
    ("path * in the middle literal hit", op(paths=["/a*b/c"]), {"path": "/a*b/c"}, True),
    ("notPaths", op(notPaths=["/get"]), {}, False),
    ("notPaths prefix", op(notPaths=["/admin*"]), {}, True),
    ("template one segment", op(paths=["/api/{*}/items"]), {"path": "/api/v1/items"}, True),
    ("template one segment, two given", op(paths=["/api/{*}/items"]),
     {"path": "/api/v1/x/items"}, False),
    ("template one segment, empty", op(paths=["/api/{*}/items"]), {"path": "/api//items"}, False),
    ("template segment chars", op(paths=["/api/{*}"]), {"path": "/api/a;b=c,d@e:f~g"}, True),
    ("template segment excludes *", op(paths=["/api/{*}"]), {"path": "/api/a*b"}, False),
    ("template any segments", op(paths=["/api/{**}"]), {"path": "/api/a/b/c"}, True),
    ("template any segments, none", op(paths=["/api/{**}"]), {"path": "/api/"}, True),
    ("template any needs its slash", op(paths=["/api/{**}"]), {"path": "/api"}, False),
    ("template literal after {**}", op(paths=["/api/{**}/end"]), {"path": "/api/a/b/end"}, True),
    ("template one and any", op(paths=["/{*}/x/{**}"]), {"path": "/a/x/b/c"}, True),
    ("template ignores the query", op(paths=["/api/{*}"]), {"path": "/api/a?b=/c"}, True),
    ("notPaths template", op(notPaths=["/api/{*}"]), {"path": "/api/v1"}, False),
    ("paths mix template and prefix", op(paths=["/x/{*}", "/g*"]), {}, True),
    ("fields of an operation AND", op(methods=["GET"], paths=["/get"], ports=["8080"]), {}, True),
    ("fields of an operation AND (one fails)", op(methods=["GET"], paths=["/post"]), {}, False),
    ("to entries OR",
     {"to": [{"operation": {"methods": ["POST"]}}, {"operation": {"paths": ["/get"]}}]}, {}, True),
    ("empty to list means any operation", {"to": []}, {}, True),
    ("from AND to", {**src(namespaces=["bar"]), **op(methods=["POST"])}, {}, False),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "kw", "expected"), [c[1:] for c in OPERATION_CASES],
                         ids=[c[0] for c in OPERATION_CASES])  # fmt: skip
def test_operation_fields(rule: dict[str, Any], kw: dict[str, Any], expected: bool) -> None:
    assert allows(rule, **kw) is expected


# -- when ------------------------------------------------------------------------------------------

WHEN_CASES = [
    ("header", when("request.headers[x-user]", ["alice"]), {}, True),
    ("header name case-insensitive", when("request.headers[X-User]", ["alice"]), {}, True),
    ("header sent in upper case", when("request.headers[x-user]", ["alice"]),
     {"headers": {"X-USER": "alice"}}, True),
    ("header value case-sensitive", when("request.headers[x-user]", ["Alice"]), {}, False),
    ("header prefix", when("request.headers[user-agent]", ["curl/*"]), {}, True),
    ("header suffix", when("request.headers[x-user]", ["*ice"]), {}, True),
    ("header presence", when("request.headers[x-user]", ["*"]), {}, True),
    ("header presence with empty value", when("request.headers[x-empty]", ["*"]),
     {"headers": {"x-empty": ""}}, True),
    ("header missing", when("request.headers[x-missing]", ["*"]), {}, False),
    ("header notValues on missing header", when("request.headers[x-missing]", None, ["a"]), {},
     True),
    ("header notValues", when("request.headers[x-user]", None, ["alice"]), {}, False),
    ("header values and notValues", when("request.headers[x-user]", ["a*"], ["alice"]), {}, False),
    ("header values and notValues pass", when("request.headers[x-user]", ["a*"], ["bob"]), {}, True),
    ("repeated header joined with ,", when("request.headers[x-user]", ["a,b"]),
     {"headers": [("x-user", "a"), ("X-User", "b")]}, True),
    ("repeated header: first value alone no", when("request.headers[x-user]", ["a"]),
     {"headers": [(b"x-user", b"a"), (b"x-user", b"b")]}, False),
    ("pseudo-header :method", when("request.headers[:method]", ["GET"]), {}, True),
    ("source.ip", when("source.ip", ["10.1.0.0/16"]), {}, True),
    ("source.ip notValues", when("source.ip", None, ["10.1.2.3"]), {}, False),
    ("remote.ip", when("remote.ip", ["203.0.113.9"]), {"remote_ip": "203.0.113.9"}, True),
    ("remote.ip miss", when("remote.ip", ["203.0.113.9"]), {}, False),
    ("source.namespace", when("source.namespace", ["bar"]), {}, True),
    ("source.namespace plaintext", when("source.namespace", ["bar"]), PLAIN, False),
    ("source.namespace notValues plaintext", when("source.namespace", None, ["bar"]), PLAIN, True),
    ("source.principal", when("source.principal", ["cluster.local/ns/bar/sa/client"]), {}, True),
    ("source.principal prefix", when("source.principal", ["cluster.local/*"]), {}, True),
    ("source.principal plaintext", when("source.principal", ["*"]), PLAIN, False),
    ("source.serviceAccount", when("source.serviceAccount", ["bar/client"]), {}, True),
    ("source.serviceAccount policy namespace", when("source.serviceAccount", ["client"]), {},
     False),
    ("source.trustDomain", when("source.trustDomain", ["cluster.local"]), {}, True),
    ("source.trustDomain miss", when("source.trustDomain", ["td"]), {}, False),
    ("destination.ip", when("destination.ip", ["10.0.0.0/24"]), {}, True),
    ("destination.ip miss", when("destination.ip", ["10.9.0.0/24"]), {}, False),
    ("destination.port", when("destination.port", ["8080"]), {}, True),
    ("destination.port notValues", when("destination.port", None, ["8080"]), {}, False),
    ("connection.sni", when("connection.sni", ["outbound_.8000_._.httpbin.foo.svc.cluster.local"]),
     {}, True),
    ("connection.sni prefix", when("connection.sni", ["outbound_*"]), {}, True),
    ("connection.sni presence without SNI", when("connection.sni", ["*"]), {"sni": ""}, False),
    ("connection.sni notValues without SNI", when("connection.sni", None, ["*"]), {"sni": ""},
     True),
    ("request.auth.principal never", when("request.auth.principal", ["*"]), {}, False),
    ("request.auth.principal notValues always", when("request.auth.principal", None, ["a/b"]), {},
     True),
    ("request.auth.audiences never", when("request.auth.audiences", ["aud"]), {}, False),
    ("request.auth.presenter never", when("request.auth.presenter", ["azp"]), {}, False),
    ("request.auth.claims never", when("request.auth.claims[groups]", ["admin"]), {}, False),
    ("request.auth.claims nested never", when("request.auth.claims[a][b]", ["x"]), {}, False),
    ("request.auth.claims notValues always", when("request.auth.claims[groups]", None, ["x"]), {},
     True),
    ("experimental metadata never", when("experimental.envoy.filters.network.mysql_proxy[db.t]",
                                         ["[update]"]), {}, False),
    ("experimental metadata notValues always",
     when("experimental.envoy.filters.network.mysql_proxy[db.t]", None, ["x"]), {}, True),
    ("when conditions AND", {"when": [{"key": "source.namespace", "values": ["bar"]},
                                      {"key": "destination.port", "values": ["1"]}]}, {}, False),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "kw", "expected"), [c[1:] for c in WHEN_CASES],
                         ids=[c[0] for c in WHEN_CASES])  # fmt: skip
def test_when_keys(rule: dict[str, Any], kw: dict[str, Any], expected: bool) -> None:
    assert allows(rule, **kw) is expected


def test_when_applies_to_every_from_and_to() -> None:
    rule = {
        "from": [{"source": {"namespaces": ["bar"]}}, {"source": {"namespaces": ["baz"]}}],
        "to": [{"operation": {"methods": ["GET"]}}, {"operation": {"methods": ["POST"]}}],
        "when": [{"key": "request.headers[x-user]", "values": ["alice"]}],
    }
    assert allows(rule)
    assert not allows(rule, headers={"x-user": "bob"})
    assert allows(rule, peer=SpiffeId.for_workload("baz", "x"), method="POST")


# -- special cases ----------------------------------------------------------------------------------


def test_no_policy_allows_everything() -> None:
    ev = evaluator(doc({"rules": [{}]}, namespace="other"))
    assert ev.is_noop
    decision = ev.evaluate(req(peer=None))
    assert decision.allowed and decision.action is None and decision.policy_id is None


def test_allow_nothing() -> None:
    ev = evaluator(doc({}, name="allow-nothing"))
    assert not ev.is_noop
    for r in (req(), req(peer=None), req(path="/", method="POST")):
        d = ev.evaluate(r)
        assert not d.allowed
        assert d.status == 403 and d.body == RBAC_DENIED_BODY
        assert d.response_code_details == NONE_DETAIL
        assert d.policy_id is None and d.action == "ALLOW" and d.response_flags is None


def test_allow_nothing_with_another_allow() -> None:
    ev = evaluator(doc({}, name="nothing"), doc({"rules": [op(paths=["/get"])]}, name="some"))
    assert ev.evaluate(req()).allowed
    assert not ev.evaluate(req(path="/post")).allowed


def test_selector_only_allow_is_allow_nothing_for_selected_workloads() -> None:
    text = doc({"selector": {"matchLabels": {"app": "httpbin"}}})
    assert not evaluator(text).evaluate(req()).allowed
    other = Workload("other", "foo", labels={"app": "other"})
    assert evaluator(text, workload=other).evaluate(req()).allowed


def test_empty_rule_matches_everything() -> None:
    allow_all = evaluator(doc({"rules": [{}]}))
    assert allow_all.evaluate(req(peer=None, method="DELETE", path="/x")).allowed
    deny_all = evaluator(doc({"action": "DENY", "rules": [{}]}, name="deny-all"))
    d = deny_all.evaluate(req())
    assert not d.allowed
    assert d.policy_id == "ns[foo]-policy[deny-all]-rule[0]"
    assert d.response_code_details == (
        "rbac_access_denied_matched_policy[ns[foo]-policy[deny-all]-rule[0]]"
    )


def test_deny_without_rules_matches_nothing() -> None:
    # Refused by validation; Istio's builder still turns it into a match-never policy.
    res = resource(AuthorizationPolicySpec(action=Action.DENY), name="d")
    ev = AuthorizationEngine.compile([res], WL, root_namespace=ROOT)
    assert ev.evaluate(req()).allowed


def test_custom_without_rules_matches_nothing() -> None:
    spec = AuthorizationPolicySpec(action=Action.CUSTOM, provider=ExtensionProvider("ext"))
    ev = AuthorizationEngine.compile([resource(spec)], WL, root_namespace=ROOT)
    assert ev.evaluate(req()).allowed


def test_from_without_source_matches_any_source() -> None:
    spec = AuthorizationPolicySpec(
        rules=(Rule(from_=(RuleFrom(None),), to=(RuleTo(Operation(methods=("GET",))),)),)
    )
    ev = AuthorizationEngine.compile([resource(spec)], WL, root_namespace=ROOT)
    assert ev.evaluate(req(peer=None)).allowed
    assert not ev.evaluate(req(method="POST")).allowed


def test_rules_are_ored() -> None:
    ev = evaluator(doc({"rules": [op(paths=["/a"]), op(paths=["/b"])]}))
    assert ev.evaluate(req(path="/a")).allowed
    assert ev.evaluate(req(path="/b")).allowed
    assert not ev.evaluate(req(path="/c")).allowed


# -- precedence -----------------------------------------------------------------------------------


def test_deny_beats_allow() -> None:
    ev = evaluator(
        doc({"rules": [{}]}, name="allow-all"),
        doc({"action": "DENY", "rules": [op(paths=["/admin*"])]}, name="deny-admin"),
    )
    assert ev.evaluate(req(path="/get")).allowed
    d = ev.evaluate(req(path="/admin/x"))
    assert not d.allowed and d.action == "DENY"
    assert d.policy_id == "ns[foo]-policy[deny-admin]-rule[0]"


def test_deny_policy_alone_allows_the_rest() -> None:
    ev = evaluator(doc({"action": "DENY", "rules": [src(notNamespaces=["bar"])]}))
    assert ev.evaluate(req()).allowed
    assert not ev.evaluate(req(peer=None)).allowed
    d = ev.evaluate(req())
    assert d.action is None and d.reason == "no ALLOW policy applies"


class Recorder:
    """An ExternalAuthorizer that answers from a table and records its calls."""

    def __init__(self, answer: bool | ExternalDecision | Exception = True) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    def check(self, request: AuthzRequest, provider: str) -> bool | ExternalDecision:
        self.calls.append((provider, request.path))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


CUSTOM = doc(
    {"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [op(paths=["/secure*"])]},
    name="ext-authz",
)
DENY_ADMIN = doc({"action": "DENY", "rules": [op(paths=["*/admin"])]}, name="deny-admin")


def test_recorder_is_an_external_authorizer() -> None:
    assert isinstance(Recorder(), ExternalAuthorizer)


def test_custom_asked_only_for_matching_requests() -> None:
    hook = Recorder(True)
    ev = evaluator(CUSTOM, custom_authorizer=hook)
    assert ev.uses_custom and ev.providers == ("ext",)
    assert ev.evaluate(req(path="/public")).allowed
    assert hook.calls == []
    assert ev.evaluate(req(path="/secure/x")).allowed
    assert hook.calls == [("ext", "/secure/x")]


def test_custom_denial_is_uaex() -> None:
    ev = evaluator(CUSTOM, custom_authorizer=Recorder(False))
    d = ev.evaluate(req(path="/secure"))
    assert not d.allowed
    assert d.status == 403 and d.body == b""
    assert d.response_flags == UAEX
    assert d.response_code_details == EXT_AUTHZ_DENIED
    assert d.action == "CUSTOM" and d.provider == "ext"
    assert d.policy_id == "istio-ext-authz-ext-ns[foo]-policy[ext-authz]-rule[0]"


def test_custom_runs_before_deny() -> None:
    hook = Recorder(False)
    ev = evaluator(CUSTOM, DENY_ADMIN, custom_authorizer=hook)
    assert ev.evaluate(req(path="/secure/admin")).response_flags == UAEX
    hook.answer = True
    d = ev.evaluate(req(path="/secure/admin"))
    assert not d.allowed and d.action == "DENY"


def test_custom_detailed_answers() -> None:
    denial = ExternalDecision(
        False, status=401, body=b"login", headers=(("www-authenticate", "x"),)
    )
    d = evaluator(CUSTOM, custom_authorizer=Recorder(denial)).evaluate(req(path="/secure"))
    assert (d.status, d.body, d.response_headers) == (401, b"login", (("www-authenticate", "x"),))
    ok = ExternalDecision(True, upstream_headers=(("x-auth-user", "alice"),))
    d = evaluator(CUSTOM, custom_authorizer=Recorder(ok)).evaluate(req(path="/secure"))
    assert d.allowed and d.upstream_headers == (("x-auth-user", "alice"),)


def test_custom_error_fails_closed() -> None:
    ev = evaluator(CUSTOM, custom_authorizer=Recorder(RuntimeError("down")))
    d = ev.evaluate(req(path="/secure"))
    assert not d.allowed and d.status == 403
    assert d.response_code_details == EXT_AUTHZ_ERROR and d.response_flags == UAEX
    assert "down" in d.reason


def test_custom_without_hook_denies_matching_requests() -> None:
    ev = evaluator(CUSTOM)
    assert not ev.uses_custom
    assert ev.evaluate(req(path="/public")).allowed
    d = ev.evaluate(req(path="/secure"))
    assert not d.allowed and d.body == RBAC_DENIED_BODY and d.response_flags is None
    pid = "istio-ext-authz-ext-ns[foo]-policy[ext-authz]-rule[0]" + BAD_CUSTOM_ACTION_SUFFIX
    assert d.policy_id == pid
    assert d.response_code_details == rbac_response_detail(pid)
    assert "no authorizer" in d.reason


def test_custom_authorizer_by_provider() -> None:
    ev = evaluator(CUSTOM, custom_authorizer={"other": Recorder(True)})
    assert not ev.evaluate(req(path="/secure")).allowed  # no authorizer for "ext"
    hook = Recorder(True)
    assert evaluator(CUSTOM, custom_authorizer={"ext": hook}).evaluate(req(path="/secure")).allowed
    assert hook.calls


def test_custom_external_answers() -> None:
    hook = Recorder(True)
    ev = evaluator(CUSTOM, custom_authorizer=hook)
    assert ev.custom_providers(req(path="/secure")) == ("ext",)
    assert ev.custom_providers(req(path="/x")) == ()
    assert not ev.evaluate(req(path="/secure"), external=False).allowed
    assert not ev.evaluate(req(path="/secure"), external={"ext": False}).allowed
    assert ev.evaluate(req(path="/secure"), external={"ext": True}).allowed
    assert hook.calls == []


def two_providers(**kw: Any) -> AuthzEvaluator:
    a = doc({"action": "CUSTOM", "provider": {"name": "b-ext"}, "rules": [op(paths=["/b*"])]},
            name="pb")  # fmt: skip
    b = doc({"action": "CUSTOM", "provider": {"name": "a-ext"}, "rules": [op(paths=["/a*"])]},
            name="pa")  # fmt: skip
    return evaluator(a, b, **kw)


def test_several_custom_providers_need_the_flag() -> None:
    hook = Recorder(True)
    ev = two_providers(custom_authorizer=hook)
    assert ev.providers == ("a-ext", "b-ext")
    d = ev.evaluate(req(path="/bx"))
    assert not d.allowed and d.policy_id is not None
    assert d.policy_id.endswith(BAD_CUSTOM_ACTION_SUFFIX) and "several providers" in d.reason
    assert ev.evaluate(req(path="/other")).allowed
    assert hook.calls == []


def test_several_custom_providers_with_the_flag() -> None:
    hook = Recorder(True)
    ev = two_providers(custom_authorizer=hook, multiple_custom_providers=True)
    assert ev.evaluate(req(path="/ab")).allowed
    assert ev.evaluate(req(path="/bb")).allowed
    assert hook.calls == [("a-ext", "/ab"), ("b-ext", "/bb")]


# -- AUDIT and dry-run -------------------------------------------------------------------------------


def test_audit_marks_only() -> None:
    audit = doc({"action": "AUDIT", "rules": [op(paths=["/get"])]}, name="audit")
    ev = evaluator(audit)
    d = ev.evaluate(req())
    assert d.allowed and d.audit and d.audit_policy_id == "ns[foo]-policy[audit]-rule[0]"
    assert not ev.evaluate(req(path="/x")).audit
    # With a DENY after it the mark is still set (the AUDIT filter runs first).
    ev = evaluator(audit, doc({"action": "DENY", "rules": [{}]}, name="d"))
    d = ev.evaluate(req())
    assert not d.allowed and d.audit


def test_audit_not_reached_after_custom_denial() -> None:
    audit = doc({"action": "AUDIT", "rules": [{}]}, name="audit")
    d = evaluator(audit, CUSTOM, custom_authorizer=Recorder(False)).evaluate(req(path="/secure"))
    assert not d.allowed and not d.audit


def test_dry_run_deny_records_without_enforcing() -> None:
    dry = doc({"action": "DENY", "rules": [op(paths=["/get"])]}, name="dry",
              annotations={"istio.io/dry-run": "true"})  # fmt: skip
    ev = evaluator(dry)
    d = ev.evaluate(req())
    assert d.allowed
    assert d.dry_run == (DryRunResult("DENY", "denied", "ns[foo]-policy[dry]-rule[0]"),)
    assert d.dry_run[0].denied
    assert ev.evaluate(req(path="/x")).dry_run == (DryRunResult("DENY", "allowed", None),)


def test_dry_run_allow_does_not_make_allow_apply() -> None:
    dry = doc({"rules": [op(paths=["/get"])]}, name="dry", annotations={"istio.io/dry-run": "1"})
    ev = evaluator(dry)
    d = ev.evaluate(req(path="/other"))
    assert d.allowed and d.reason == "no ALLOW policy applies"
    assert d.dry_run == (DryRunResult("ALLOW", "denied", None),)
    d = ev.evaluate(req())
    assert d.dry_run == (DryRunResult("ALLOW", "allowed", "ns[foo]-policy[dry]-rule[0]"),)


def test_dry_run_next_to_enforced_policies() -> None:
    ev = evaluator(
        doc({"rules": [op(paths=["/get"])]}, name="enforced"),
        doc({"rules": [op(paths=["/post"])]}, name="dry", annotations={"istio.io/dry-run": "True"}),
        doc({"action": "DENY", "rules": [op(methods=["DELETE"])]}, name="deny"),
    )
    d = ev.evaluate(req())
    assert d.allowed and d.policy_id == "ns[foo]-policy[enforced]-rule[0]"
    assert d.dry_run == (DryRunResult("ALLOW", "denied", None),)
    # Denied by the DENY filter: the ALLOW filter (and its dry-run rules) is never reached.
    d = ev.evaluate(req(method="DELETE"))
    assert not d.allowed and d.dry_run == ()


def test_dry_run_allow_nothing() -> None:
    ev = evaluator(doc({}, annotations={"istio.io/dry-run": "true"}))
    d = ev.evaluate(req())
    assert d.allowed and d.dry_run == (DryRunResult("ALLOW", "denied", None),)


@pytest.mark.parametrize(
    ("value", "dry"),
    [("true", True), ("True", True), ("TRUE", True), ("t", True), ("1", True), ("false", False),
     ("0", False), ("F", False), ("yes", False), ("on", False), ("", False)],
)  # fmt: skip
def test_dry_run_annotation_is_a_go_bool(value: str, dry: bool) -> None:
    # Invalid values are refused by validation; Istio's builder then enforces the policy.
    spec = AuthorizationPolicySpec(action=Action.DENY, rules=(Rule(),))
    res = resource(spec, annotations={"istio.io/dry-run": value})
    d = AuthorizationEngine.compile([res], WL, root_namespace=ROOT).evaluate(req())
    assert d.allowed is dry


def test_parse_go_bool() -> None:
    assert parse_go_bool("T") is True
    assert parse_go_bool("False") is False
    assert parse_go_bool("fAlse") is None
    assert parse_go_bool(None) is None


def test_dry_run_custom_records_and_never_asks() -> None:
    spec = AuthorizationPolicySpec(
        action=Action.CUSTOM, provider=ExtensionProvider("ext"), rules=(Rule(),)
    )
    res = resource(spec, name="c", annotations={"istio.io/dry-run": "true"})
    hook = Recorder(False)
    ev = AuthorizationEngine.compile([res], WL, root_namespace=ROOT, custom_authorizer=hook)
    d = ev.evaluate(req())
    assert d.allowed and hook.calls == []
    assert d.dry_run == (
        DryRunResult("CUSTOM", "denied", "istio-ext-authz-ext-ns[foo]-policy[c]-rule[0]"),
    )


# -- policy ids --------------------------------------------------------------------------------------


def test_policy_id_format() -> None:
    assert policy_id("foo", "bar", 3) == "ns[foo]-policy[bar]-rule[3]"
    assert policy_id("foo", "bar", 0, "ext") == "istio-ext-authz-ext-ns[foo]-policy[bar]-rule[0]"
    assert rbac_response_detail("a b\tc") == "rbac_access_denied_matched_policy[a_b_c]"
    assert rbac_response_detail(None) == NONE_DETAIL


def test_rule_index_in_id() -> None:
    rules = [op(paths=["/a"]), op(paths=["/get"])]
    d = evaluator(doc({"action": "DENY", "rules": rules}, name="d")).evaluate(req())
    assert d.policy_id == "ns[foo]-policy[d]-rule[1]"


def test_effective_policy_id_is_the_smallest_in_byte_order() -> None:
    # Envoy keeps policies in a std::map: "rule[10]" sorts before "rule[2]".
    rules = [op(paths=["/nothing"])] * 2 + [{}] + [op(paths=["/nothing"])] * 7 + [{}]
    d = evaluator(doc({"action": "DENY", "rules": rules}, name="d")).evaluate(req())
    assert d.policy_id == "ns[foo]-policy[d]-rule[10]"
    # Across policies and namespaces: ns[foo] < ns[istio-system]; policy[a] < policy[b].
    ev = evaluator(
        doc({"action": "DENY", "rules": [{}]}, name="b"),
        doc({"action": "DENY", "rules": [{}]}, name="a", namespace=ROOT),
        doc({"action": "DENY", "rules": [{}]}, name="c"),
    )
    assert ev.evaluate(req()).policy_id == "ns[foo]-policy[b]-rule[0]"
    allow = evaluator(doc({"rules": [{}]}, name="z"), doc({"rules": [{}]}, name="y"))
    assert allow.evaluate(req()).policy_id == "ns[foo]-policy[y]-rule[0]"


# -- selection scope ----------------------------------------------------------------------------------

DENY_ALL: dict[str, Any] = {"action": "DENY", "rules": [{}]}


@pytest.mark.parametrize(
    ("namespace", "selector", "applies"),
    [
        ("foo", None, True),
        ("foo", {"app": "httpbin"}, True),
        ("foo", {"app": "httpbin", "v": "1"}, True),
        ("foo", {"app": "httpbin", "v": "2"}, False),
        ("foo", {"app": "other"}, False),
        ("foo", {}, True),
        ("bar", None, False),
        ("bar", {"app": "httpbin"}, False),
        (ROOT, None, True),
        (ROOT, {"app": "httpbin"}, True),
        (ROOT, {"app": "other"}, False),
    ],
)
def test_scope(namespace: str, selector: dict[str, str] | None, applies: bool) -> None:
    spec = dict(DENY_ALL)
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    ev = evaluator(doc(spec, namespace=namespace))
    assert ev.evaluate(req()).allowed is not applies
    assert bool(ev.policies) is applies


def test_target_refs_policies_are_ignored() -> None:
    spec = dict(DENY_ALL)
    spec["targetRefs"] = [{"kind": "Service", "group": "", "name": "httpbin"}]
    assert evaluator(doc(spec)).is_noop
    legacy = dict(DENY_ALL)
    legacy["targetRef"] = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}
    assert evaluator(doc(legacy)).is_noop


def test_custom_root_namespace() -> None:
    docs = load(doc(DENY_ALL, namespace="mesh-root"), doc(DENY_ALL, namespace=ROOT, name="q"))
    ev = AuthorizationEngine.compile(docs, WL, root_namespace="mesh-root")
    assert ev.policies == ("mesh-root/p",)


def test_workload_in_the_root_namespace() -> None:
    wl = Workload("gw", ROOT, labels={"app": "gw"})
    ev = evaluator(doc(DENY_ALL, namespace=ROOT), doc(DENY_ALL, namespace="foo"), workload=wl)
    assert ev.policies == (f"{ROOT}/p",)


def test_compile_from_snapshot_uses_its_options() -> None:
    text = "\n---\n".join(
        [doc(DENY_ALL, namespace="mesh-root"), doc({"rules": [src(principals=["td/ns/bar/sa/c"])]})]
    )
    snapshot = build_snapshot(
        text, options=ConfigOptions(root_namespace="mesh-root", trust_domain="td")
    )
    ev = AuthorizationEngine.compile(snapshot, WL)
    assert ev.policies == ("mesh-root/p", "foo/p")
    snapshot2 = build_snapshot(text, options=ConfigOptions(trust_domain="td"))
    ev2 = AuthorizationEngine.compile(snapshot2, WL)
    assert ev2.policies == ("foo/p",)
    assert ev2.evaluate(req(peer=SpiffeId.for_workload("bar", "c", "td"))).allowed


def test_select_helper() -> None:
    docs = load(doc(DENY_ALL), doc(DENY_ALL, namespace="x", name="q"))
    assert [r.name for r in AuthorizationEngine.select(docs, WL)] == ["p"]


# -- trust domains -------------------------------------------------------------------------------------


def ev_td(rule: dict[str, Any], td: str, aliases: tuple[str, ...] = ()) -> AuthzEvaluator:
    return evaluator(doc({"rules": [rule]}), trust_domain=td, trust_domain_aliases=aliases)


@pytest.mark.parametrize(
    ("principal", "td", "aliases", "peer_td", "expected"),
    [
        ("td-old/ns/bar/sa/client", "td-new", ("td-old",), "td-new", True),
        ("td-old/ns/bar/sa/client", "td-new", ("td-old",), "td-old", True),
        ("td-new/ns/bar/sa/client", "td-new", ("td-old",), "td-old", True),
        ("td-old/ns/bar/sa/client", "td-new", (), "td-new", False),
        ("td-old/ns/bar/sa/client", "td-new", (), "td-old", True),
        # "cluster.local" always means the local trust domain and its aliases.
        ("cluster.local/ns/bar/sa/client", "example.org", (), "example.org", True),
        ("cluster.local/ns/bar/sa/client", "example.org", (), "cluster.local", False),
        ("other/ns/bar/sa/client", "td-new", ("td-old",), "td-new", False),
        ("*/ns/bar/sa/client", "td-new", (), "anything", True),
        ("td-old/ns/bar/sa/*", "td-new", ("td-old",), "td-new", True),
    ],
)
def test_trust_domain_aliases_for_principals(
    principal: str, td: str, aliases: tuple[str, ...], peer_td: str, expected: bool
) -> None:
    peer = SpiffeId.for_workload("bar", "client", peer_td)
    assert ev_td(src(principals=[principal]), td, aliases).evaluate(req(peer=peer)).allowed is (
        expected
    )
    # The source.principal condition goes through the same rewriting.
    ev = ev_td(when("source.principal", [principal]), td, aliases)
    assert ev.evaluate(req(peer=peer)).allowed is expected


def test_trust_domain_aliases_for_trust_domains() -> None:
    peer_new = SpiffeId.for_workload("bar", "client", "td-new")
    ev = ev_td(src(trustDomains=["td-old"]), "td-new", ("td-old",))
    assert ev.evaluate(req(peer=peer_new)).allowed
    ev = ev_td(src(trustDomains=["td-old"]), "td-new")
    assert not ev.evaluate(req(peer=peer_new)).allowed


def test_bundle_helpers() -> None:
    bundle = TrustDomainBundle(("new", "old"))
    assert bundle.replace_aliases(["old/ns/a/sa/b"]) == ("new/ns/a/sa/b", "old/ns/a/sa/b")
    assert bundle.replace_aliases(["*old/ns/a/sa/b"]) == ("new/ns/a/sa/b", "*old/ns/a/sa/b")
    assert bundle.replace_aliases(["ns/a/sa/b"]) == ("ns/a/sa/b",)
    assert bundle.expand(["old", "x"]) == ("new", "old", "x")


# -- what Istio does with what it cannot translate --------------------------------------------------


def _spec(
    action: Action, *sources: Source, when: tuple[Condition, ...] = ()
) -> AuthorizationPolicySpec:
    return AuthorizationPolicySpec(
        action=action, rules=(Rule(from_=tuple(RuleFrom(s) for s in sources), when=when),)
    )


def test_bad_value_drops_the_allow_rule() -> None:
    spec = _spec(Action.ALLOW, Source(ip_blocks=("10.0.0.0/8", "not-an-ip")))
    ev = AuthorizationEngine.compile([resource(spec)], WL, root_namespace=ROOT)
    assert not ev.evaluate(req()).allowed
    assert any("not-an-ip" in n for n in ev.notes)


def test_bad_value_is_dropped_from_a_deny_rule() -> None:
    spec = _spec(Action.DENY, Source(ip_blocks=("10.9.0.0/16", "not-an-ip")))
    ev = AuthorizationEngine.compile([resource(spec)], WL, root_namespace=ROOT)
    assert ev.evaluate(req()).allowed  # 10.1.2.3 is not in 10.9/16
    only_bad = _spec(Action.DENY, Source(ip_blocks=("not-an-ip",)))
    ev = AuthorizationEngine.compile([resource(only_bad)], WL, root_namespace=ROOT)
    assert not ev.evaluate(req()).allowed  # the condition vanished: the rule matches all


def test_unknown_when_key_drops_the_rule_whatever_the_action() -> None:
    bad = (Condition(key="destination.labels[app]", values=("x",)),)
    spec = _spec(Action.DENY, when=bad)
    ev = AuthorizationEngine.compile([resource(spec)], WL, root_namespace=ROOT)
    assert ev.evaluate(req()).allowed
    assert any("unknown attribute" in n for n in ev.notes)


def test_bad_header_key() -> None:
    bad = (Condition(key="request.headers", values=("x",)),)
    ev = AuthorizationEngine.compile([resource(_spec(Action.ALLOW, when=bad))], WL)
    assert not ev.evaluate(req()).allowed
    ev = AuthorizationEngine.compile([resource(_spec(Action.DENY, when=bad))], WL)
    assert not ev.evaluate(req()).allowed  # DENY: the condition is dropped


def test_bad_port_and_template() -> None:
    spec = AuthorizationPolicySpec(
        rules=(
            Rule(to=(RuleTo(Operation(ports=("http",))),)),
            Rule(to=(RuleTo(Operation(paths=("/a/{**}/{*}",))),)),
        )
    )
    ev = AuthorizationEngine.compile([resource(spec)], WL)
    assert not ev.evaluate(req()).allowed
    assert len(ev.notes) == 2


# -- request building ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xff", "hops", "use_remote", "expected"),
    [
        (None, 0, False, "10.0.0.1"),
        ("203.0.113.9", 0, False, "203.0.113.9"),
        ("1.1.1.1, 2.2.2.2", 0, False, "2.2.2.2"),
        ("1.1.1.1, 2.2.2.2", 1, False, "1.1.1.1"),
        ("1.1.1.1, 2.2.2.2", 2, False, "10.0.0.1"),
        ("1.1.1.1,garbage", 0, False, "10.0.0.1"),
        ("2001:db8::1", 0, False, "2001:db8::1"),
        ("1.1.1.1, 2.2.2.2", 0, True, "10.0.0.1"),
        ("1.1.1.1, 2.2.2.2", 1, True, "2.2.2.2"),
        ("1.1.1.1, 2.2.2.2", 2, True, "1.1.1.1"),
    ],
)
def test_remote_address(xff: str | None, hops: int, use_remote: bool, expected: str) -> None:
    got = remote_address("10.0.0.1", xff, xff_num_trusted_hops=hops, use_remote_address=use_remote)
    assert got == expected


def test_from_asgi() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/a/b",
        "raw_path": b"/a%2Fb",
        "query_string": b"x=1",
        "headers": [
            (b"host", b"svc:80"),
            (b"x-forwarded-for", b"203.0.113.9"),
            (b"x-a", b"1"),
            (b"x-a", b"2"),
        ],
        "client": ("10.1.2.3", 5555),
        "server": ("10.0.0.5", 8080),
    }
    r = AuthzRequest.from_asgi(scope, peer=CLIENT, path=normalize_path(b"/a%2Fb?x=1"), sni="s")
    assert (r.method, r.host, r.path, r.sni) == ("POST", "svc:80", "/a%2Fb?x=1", "s")
    assert (r.source_ip, r.remote_ip, r.destination_ip, r.destination_port) == (
        "10.1.2.3",
        "203.0.113.9",
        "10.0.0.5",
        8080,
    )
    assert r.header("X-A") == "1,2"
    assert r.header(":authority") == "svc:80"
    assert r.header(":path") == "/a%2Fb?x=1"
    assert AuthzRequest.from_asgi(scope).path == "/a/b"


def test_from_wsgi() -> None:
    environ = {
        "REQUEST_METHOD": "PUT",
        "PATH_INFO": "/x",
        "REMOTE_ADDR": "10.1.2.3",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "svc",
        "HTTP_X_USER": "alice",
        "CONTENT_TYPE": "text/plain",
    }
    r = AuthzRequest.from_wsgi(environ, path="/y", destination_ip="10.0.0.5")
    assert (r.method, r.host, r.path, r.destination_port) == ("PUT", "svc", "/y", 8000)
    assert r.header("x-user") == "alice" and r.header("content-type") == "text/plain"
    assert r.peer is None and r.remote_ip == "10.1.2.3"
    assert AuthzRequest.from_wsgi(environ).path == "/x"


def test_request_is_frozen() -> None:
    r = req()
    with pytest.raises(AttributeError):
        r.path = "/x"  # type: ignore[misc]
    assert r.effective_remote_ip == "10.1.2.3"
    assert replace(r, path="/x").path == "/x"


def test_evaluator_is_immutable() -> None:
    ev = evaluator(doc(DENY_ALL))
    with pytest.raises(AttributeError):
        ev.policies = ()  # type: ignore[misc]
    assert "foo/httpbin" in repr(ev)


def test_decision_is_shared_when_nothing_varies() -> None:
    ev = evaluator(doc(DENY_ALL))
    a, b = ev.evaluate(req()), ev.evaluate(req(peer=None))
    assert a is b
    assert isinstance(a, AuthzDecision)


# -- the index: same answers as checking every rule ------------------------------------------------


def _random_rule(rng: random.Random) -> Rule:
    def pick(pool: list[str], k: int = 2) -> tuple[str, ...]:
        return tuple(rng.sample(pool, rng.randint(1, k)))

    principals = [f"cluster.local/ns/n{i}/sa/s{j}" for i in range(4) for j in range(3)]
    principals += ["cluster.local/ns/n1/*", "*/sa/s2", "*"]
    namespaces = ["n0", "n1", "n2", "n3", "n*"]
    methods = ["GET", "POST", "PUT", "G*"]
    sources: list[RuleFrom] = []
    for _ in range(rng.randint(0, 2)):
        kind = rng.random()
        if kind < 0.4:
            sources.append(RuleFrom(Source(principals=pick(principals))))
        elif kind < 0.7:
            sources.append(RuleFrom(Source(namespaces=pick(namespaces))))
        elif kind < 0.85:
            sources.append(RuleFrom(Source(not_principals=pick(principals))))
        else:
            sources.append(RuleFrom(Source(ip_blocks=("10.0.0.0/8",))))
    ops: list[RuleTo] = []
    for _ in range(rng.randint(0, 2)):
        if rng.random() < 0.7:
            ops.append(RuleTo(Operation(methods=pick(methods))))
        else:
            ops.append(RuleTo(Operation(paths=("/a*",))))
    conds: tuple[Condition, ...] = ()
    if rng.random() < 0.2:
        conds = (Condition(key="source.principal", values=pick(principals[:12])),)
    return Rule(from_=tuple(sources), to=tuple(ops), when=conds)


def test_index_agrees_with_a_linear_scan() -> None:
    rng = random.Random(7)
    bundle = TrustDomainBundle(("cluster.local",))
    for _ in range(30):
        rules = [
            compile_rule(
                _random_rule(rng), f"r{i:03d}", allow=True, policy_ns="foo", bundle=bundle, notes=[]
            )
            for i in range(rng.randint(1, 25))
        ]
        engine = Engine(rules)
        for _ in range(40):
            peer = (
                None
                if rng.random() < 0.15
                else SpiffeId.for_workload(f"n{rng.randint(0, 4)}", f"s{rng.randint(0, 3)}")
            )
            r = req(peer=peer, method=rng.choice(["GET", "POST", "PUT", "DELETE"]),
                    path=rng.choice(["/a/x", "/b"]), source_ip=rng.choice(["10.1.1.1", "192.0.2.1"]))  # fmt: skip
            linear = next((x for x in engine.rules if x.matches(r)), None)
            assert engine.first_match(r) is linear


def test_index_limits_the_work() -> None:
    bundle = TrustDomainBundle(("cluster.local",))
    rules = [
        compile_rule(
            Rule(from_=(RuleFrom(Source(principals=(f"cluster.local/ns/n/sa/s{i}",))),)),
            f"r{i:04d}",
            allow=True,
            policy_ns="foo",
            bundle=bundle,
            notes=[],
        )
        for i in range(1000)
    ]
    rules.append(compile_rule(Rule(to=(RuleTo(Operation(methods=("POST",))),)), "z-post",
                              allow=True, policy_ns="foo", bundle=bundle, notes=[]))  # fmt: skip
    engine = Engine(rules)
    r = req(peer=SpiffeId.for_workload("n", "s500"))
    assert list(engine.candidates(r)) == [500]
    assert engine.first_match(r) is engine.rules[500]
    assert list(engine.candidates(req(peer=None, method="POST"))) == [1000]
    assert list(engine.candidates(req(peer=None))) == []
