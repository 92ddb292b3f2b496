"""PeerAuthentication and AuthorizationPolicy: what Istio accepts, refuses and warns about.

Rules come from istio/istio ``pkg/config/validation/validation.go``
(``ValidatePeerAuthentication``, ``ValidateAuthorizationPolicy``,
``validateWorkloadSelector``, ``validatePolicyTargetReference``,
``checkDryRunAnnotation``), ``pkg/config/security/security.go``
(``ValidateAttribute``, ``ValidateIPs``, ``ValidatePorts``,
``CheckServiceAccount``, ``CheckTrustDomainValues``, ``CheckValidPathTemplate``)
and the CRD schema generated from the istio/api protos ("(CRD)" below: the
Kubernetes API server refuses these before Istio's webhook sees them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inmesh.config.dump import resource_to_data
from inmesh.config.load import load_paths, load_text
from inmesh.config.resources.authorization_policy import (
    Action,
    AuthorizationPolicySpec,
)
from inmesh.config.resources.peer_authentication import (
    MutualTLSMode,
    PeerAuthenticationSpec,
    PortLevelMtls,
)
from inmesh.errors import Severity

from .helpers import assert_invalid, assert_valid, load_spec

PA = "PeerAuthentication"
AP = "AuthorizationPolicy"
SEEDS = Path("/work/shared/seeds/configs")
CORPUS = Path(__file__).resolve().parent / "corpus"
DRY_RUN = "annotations: {{istio.io/dry-run: '{}'}}"
SEL = "selector: {matchLabels: {app: backend}}"
CUSTOM = "action: CUSTOM\nprovider: {name: ext-authz}"


def _src(source: str, extra: str = "") -> str:
    """An ALLOW policy with one rule whose only ``from`` has ``source``."""
    return f"{extra}\nrules:\n- from:\n  - source: {source}"


def _op(operation: str) -> str:
    return f"rules:\n- to:\n  - operation: {operation}"


def _when(condition: str, extra: str = "") -> str:
    return f"{extra}\nrules:\n- when:\n  - {condition}"


def _many(template: str, count: int) -> str:
    return "[" + ", ".join(template.format(i=i) for i in range(count)) + "]"


# ---------------------------------------------------------------------------
# Refused: (kind, spec, field path of an error, metadata lines)

INVALID: list[Any] = [
    # -- PeerAuthentication: ValidatePeerAuthentication
    # "mesh/namespace peer authentication cannot have port level mTLS" (and CRD CEL rule)
    pytest.param(PA, "portLevelMtls: {8080: {mode: DISABLE}}", "spec.portLevelMtls", "",
                 id="pa-port-level-without-selector"),
    # an empty matchLabels counts as no selector (emptySelector in validation.go)
    pytest.param(PA, "selector: {}\nportLevelMtls: {8080: {mode: DISABLE}}",
                 "spec.portLevelMtls", "", id="pa-port-level-selector-without-labels"),
    # "port level mTLS, if defined, must have at least one element" (and CRD minProperties)
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{}}", "spec.portLevelMtls", "",
                 id="pa-port-level-empty"),
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{0: {{mode: STRICT}}}}",
                 "spec.portLevelMtls['0']", "", id="pa-port-zero"),
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{65536: {{mode: STRICT}}}}",
                 "spec.portLevelMtls['65536']", "", id="pa-port-too-big"),
    # map<uint32, ...>: jsonpb parses keys with ParseUint, so names and signs fail
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{http: {{mode: STRICT}}}}",
                 "spec.portLevelMtls.http", "", id="pa-port-key-name"),
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{-1: {{mode: STRICT}}}}",
                 "spec.portLevelMtls['-1']", "", id="pa-port-key-negative"),
    pytest.param(PA, f"{SEL}\nportLevelMtls: [8080]", "spec.portLevelMtls", "",
                 id="pa-port-level-list"),
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{8080: {{mode: MUTUAL}}}}",
                 "spec.portLevelMtls['8080'].mode", "", id="pa-port-mode-unknown"),
    pytest.param(PA, "mtls: {mode: STRICTER}", "spec.mtls.mode", "", id="pa-mode-unknown"),
    pytest.param(PA, "mtls: {mode: strict}", "spec.mtls.mode", "", id="pa-mode-lower-case"),
    pytest.param(PA, "mtls: STRICT", "spec.mtls", "", id="pa-mtls-not-object"),
    pytest.param(PA, "mode: STRICT", "spec.mode", "", id="pa-mode-outside-mtls"),
    # validateWorkloadSelector, and CRD "wildcard not allowed in label value match"
    pytest.param(PA, "selector: {matchLabels: {app: 'back*'}}",
                 "spec.selector.matchLabels.app", "", id="pa-selector-wildcard-value"),
    pytest.param(PA, "selector: {matchLabels: {'*': backend}}",
                 "spec.selector.matchLabels['*']", "", id="pa-selector-wildcard-key"),
    pytest.param(PA, "selector: {matchLabels: {'': backend}}",
                 "spec.selector.matchLabels['']", "", id="pa-selector-empty-key"),
    pytest.param(PA, f"selector: {{matchLabels: {{app: {'v' * 64}}}}}",
                 "spec.selector.matchLabels.app", "", id="pa-selector-value-too-long-crd"),
    # the networking kinds say `labels`; the security kinds say `matchLabels`
    pytest.param(PA, "selector: {labels: {app: backend}}", "spec.selector.labels", "",
                 id="pa-selector-labels-not-matchlabels"),
    # checkDryRunAnnotation: only AuthorizationPolicy supports istio.io/dry-run
    pytest.param(PA, "mtls: {mode: STRICT}", "metadata.annotations['istio.io/dry-run']",
                 DRY_RUN.format("true"), id="pa-dry-run-annotation"),

    # -- AuthorizationPolicy: action, provider and rules
    pytest.param(AP, "action: DENY", "spec.rules", "", id="ap-deny-without-rules"),
    # jsonpb reads `rules: []` as no rules at all
    pytest.param(AP, "action: DENY\nrules: []", "spec.rules", "", id="ap-deny-empty-rules"),
    pytest.param(AP, CUSTOM, "spec.rules", "", id="ap-custom-without-rules"),
    pytest.param(AP, "action: CUSTOM\nrules: [{}]", "spec.provider", "",
                 id="ap-custom-without-provider"),
    pytest.param(AP, "action: CUSTOM\nprovider: {name: ''}\nrules: [{}]",
                 "spec.provider.name", "", id="ap-custom-empty-provider-name"),
    pytest.param(AP, "provider: {name: ext-authz}\nrules: [{}]", "spec.provider", "",
                 id="ap-provider-with-allow"),
    pytest.param(AP, "action: DENY\nprovider: {name: ext-authz}\nrules: [{}]",
                 "spec.provider", "", id="ap-provider-with-deny"),
    pytest.param(AP, "action: REJECT\nrules: [{}]", "spec.action", "", id="ap-action-unknown"),
    # "... is currently not supported with CUSTOM action"
    pytest.param(AP, _src("{principals: [cluster.local/ns/a/sa/b]}", CUSTOM),
                 "spec.rules[0].from[0].source.principals", "", id="ap-custom-principals"),
    pytest.param(AP, _src("{serviceAccounts: [a/b]}", CUSTOM),
                 "spec.rules[0].from[0].source.serviceAccounts", "",
                 id="ap-custom-service-accounts"),
    pytest.param(AP, _src("{notTrustDomains: [example.org]}", CUSTOM),
                 "spec.rules[0].from[0].source.notTrustDomains", "",
                 id="ap-custom-trust-domains"),
    pytest.param(AP, _when("{key: source.namespace, values: [a]}", CUSTOM),
                 "spec.rules[0].when[0].key", "", id="ap-custom-when-source-namespace"),
    pytest.param(AP, _when("{key: 'request.auth.claims[iss]', values: [a]}", CUSTOM),
                 "spec.rules[0].when[0].key", "", id="ap-custom-when-request-auth"),
    pytest.param(AP, f"rules: {_many('{{}}', 513)}", "spec.rules", "",
                 id="ap-rules-over-512-crd"),
    pytest.param(AP, "rules: {to: []}", "spec.rules", "", id="ap-rules-not-a-list"),
    pytest.param(AP, "rules: [null]", "spec.rules[0]", "", id="ap-rule-null"),

    # -- from / source
    pytest.param(AP, "rules: [{from: [{}]}]", "spec.rules[0].from[0].source", "",
                 id="ap-from-without-source"),
    pytest.param(AP, _src("{}"), "spec.rules[0].from[0].source", "", id="ap-source-empty"),
    # an empty list is an unset list, so this source is empty too
    pytest.param(AP, _src("{principals: []}"), "spec.rules[0].from[0].source", "",
                 id="ap-source-only-empty-list"),
    pytest.param(AP, "rules: [{from: {source: {namespaces: [a]}}}]", "spec.rules[0].from", "",
                 id="ap-from-not-a-list"),
    pytest.param(AP, _src("{principal: [cluster.local/ns/a/sa/b]}"),
                 "spec.rules[0].from[0].source.principal", "", id="ap-source-unknown-field"),
    pytest.param(AP, _src("{principals: cluster.local/ns/a/sa/b}"),
                 "spec.rules[0].from[0].source.principals", "", id="ap-principals-not-a-list"),
    # CheckEmptyValues
    pytest.param(AP, _src("{principals: [cluster.local/ns/a/sa/b, '']}"),
                 "spec.rules[0].from[0].source.principals[1]", "", id="ap-principal-empty"),
    pytest.param(AP, _src("{notRequestPrincipals: ['']}"),
                 "spec.rules[0].from[0].source.notRequestPrincipals[0]", "",
                 id="ap-request-principal-empty"),
    pytest.param(AP, _src("{namespaces: ['']}"),
                 "spec.rules[0].from[0].source.namespaces[0]", "", id="ap-namespace-empty"),
    # ValidateIPs (netip.ParseAddr / netip.ParsePrefix)
    pytest.param(AP, _src("{ipBlocks: [10.0.0.0/33]}"),
                 "spec.rules[0].from[0].source.ipBlocks[0]", "", id="ap-ip-prefix-too-long"),
    pytest.param(AP, _src("{ipBlocks: [db.example.com]}"),
                 "spec.rules[0].from[0].source.ipBlocks[0]", "", id="ap-ip-hostname"),
    pytest.param(AP, _src("{notIpBlocks: [10.0.0.0/08]}"),
                 "spec.rules[0].from[0].source.notIpBlocks[0]", "",
                 id="ap-ip-prefix-leading-zero"),
    pytest.param(AP, _src("{remoteIpBlocks: [010.0.0.1]}"),
                 "spec.rules[0].from[0].source.remoteIpBlocks[0]", "",
                 id="ap-ip-octet-leading-zero"),
    pytest.param(AP, _src("{notRemoteIpBlocks: ['fe80::1%eth0/64']}"),
                 "spec.rules[0].from[0].source.notRemoteIpBlocks[0]", "",
                 id="ap-ip-prefix-with-zone"),
    # CheckServiceAccount
    pytest.param(AP, _src("{serviceAccounts: ['default/*']}"),
                 "spec.rules[0].from[0].source.serviceAccounts[0]", "", id="ap-sa-wildcard"),
    pytest.param(AP, _src("{serviceAccounts: [a/b/c]}"),
                 "spec.rules[0].from[0].source.serviceAccounts[0]", "", id="ap-sa-two-slashes"),
    pytest.param(AP, _src("{notServiceAccounts: [/frontend]}"),
                 "spec.rules[0].from[0].source.notServiceAccounts[0]", "",
                 id="ap-sa-empty-namespace"),
    pytest.param(AP, _src("{serviceAccounts: [default/]}"),
                 "spec.rules[0].from[0].source.serviceAccounts[0]", "",
                 id="ap-sa-empty-account"),
    pytest.param(AP, _src(f"{{serviceAccounts: [{'s' * 321}]}}"),
                 "spec.rules[0].from[0].source.serviceAccounts[0]", "", id="ap-sa-too-long"),
    pytest.param(AP, _src(f"{{serviceAccounts: {_many('sa{i}', 17)}}}"),
                 "spec.rules[0].from[0].source.serviceAccounts", "", id="ap-sa-over-16"),
    # validation.go and the CRD rule "Cannot set serviceAccounts with namespaces or principals"
    pytest.param(AP, _src("{serviceAccounts: [a/b], principals: [cluster.local/ns/a/sa/c]}"),
                 "spec.rules[0].from[0].source.serviceAccounts", "", id="ap-sa-with-principals"),
    pytest.param(AP, _src("{notServiceAccounts: [a/b], namespaces: [a]}"),
                 "spec.rules[0].from[0].source.notServiceAccounts", "",
                 id="ap-sa-with-namespaces"),
    # CheckTrustDomainValues
    pytest.param(AP, _src("{trustDomains: ['*.example.*']}"),
                 "spec.rules[0].from[0].source.trustDomains[0]", "", id="ap-td-two-stars"),
    pytest.param(AP, _src("{trustDomains: ['cluster*local']}"),
                 "spec.rules[0].from[0].source.trustDomains[0]", "", id="ap-td-middle-star"),
    pytest.param(AP, _src("{notTrustDomains: [cluster.local/ns/default]}"),
                 "spec.rules[0].from[0].source.notTrustDomains[0]", "", id="ap-td-slash"),

    # -- to / operation
    pytest.param(AP, "rules: [{to: [{}]}]", "spec.rules[0].to[0].operation", "",
                 id="ap-to-without-operation"),
    pytest.param(AP, _op("{}"), "spec.rules[0].to[0].operation", "", id="ap-operation-empty"),
    pytest.param(AP, _op("{hosts: ['']}"), "spec.rules[0].to[0].operation.hosts[0]", "",
                 id="ap-host-empty"),
    pytest.param(AP, _op("{notMethods: ['']}"), "spec.rules[0].to[0].operation.notMethods[0]",
                 "", id="ap-method-empty"),
    # ValidatePorts: strconv.ParseUint(port, 10, 32) and <= 65535
    pytest.param(AP, _op("{ports: [http]}"), "spec.rules[0].to[0].operation.ports[0]", "",
                 id="ap-port-name"),
    pytest.param(AP, _op("{ports: ['65536']}"), "spec.rules[0].to[0].operation.ports[0]", "",
                 id="ap-port-too-big"),
    pytest.param(AP, _op("{notPorts: ['-1']}"), "spec.rules[0].to[0].operation.notPorts[0]", "",
                 id="ap-port-negative"),
    # ports are strings in the proto (and the CRD): an unquoted number is refused
    pytest.param(AP, _op("{ports: [8080]}"), "spec.rules[0].to[0].operation.ports[0]", "",
                 id="ap-port-unquoted"),
    # CheckValidPathTemplate
    pytest.param(AP, _op("{paths: ['/a/{**}/b/{*}']}"),
                 "spec.rules[0].to[0].operation.paths[0]", "", id="ap-path-any-not-last"),
    pytest.param(AP, _op("{paths: ['/foo/{*}.txt']}"),
                 "spec.rules[0].to[0].operation.paths[0]", "", id="ap-path-template-with-text"),
    pytest.param(AP, _op("{notPaths: ['/*/baz/{*}']}"),
                 "spec.rules[0].to[0].operation.notPaths[0]", "",
                 id="ap-path-template-with-star"),
    # '{' and '}' outside an operator are refused even without a template
    pytest.param(AP, _op("{paths: ['/users/{id}']}"),
                 "spec.rules[0].to[0].operation.paths[0]", "", id="ap-path-braces"),
    pytest.param(AP, _op("{paths: ['/a//{*}']}"),
                 "spec.rules[0].to[0].operation.paths[0]", "",
                 id="ap-path-template-empty-segment"),

    # -- when (ValidateAttribute)
    pytest.param(AP, _when("{key: '', values: [a]}"), "spec.rules[0].when[0].key", "",
                 id="ap-when-key-empty"),
    pytest.param(AP, _when("{values: [a]}"), "spec.rules[0].when[0].key", "",
                 id="ap-when-key-missing-crd"),
    pytest.param(AP, _when("{key: source.ip}"), "spec.rules[0].when[0]", "",
                 id="ap-when-no-values"),
    pytest.param(AP, _when("{key: source.address, values: [10.0.0.1]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-unknown-key"),
    pytest.param(AP, _when("{key: 'destination.labels[app]', values: [a]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-destination-labels"),
    pytest.param(AP, _when("{key: destination.namespace, values: [a]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-destination-namespace"),
    pytest.param(AP, _when("{key: destination.user, values: [a]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-destination-user-v1alpha1"),
    # validateMapKey: "a[b]" with a non-empty b
    pytest.param(AP, _when("{key: request.headers, values: [a]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-header-without-name"),
    pytest.param(AP, _when("{key: 'request.headers[]', values: [a]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-header-empty-name"),
    pytest.param(AP, _when("{key: 'experimental.envoy.filters.a', values: [a]}"),
                 "spec.rules[0].when[0].key", "", id="ap-when-experimental-without-key"),
    pytest.param(AP, _when("{key: source.ip, values: [10.0.0.300]}"),
                 "spec.rules[0].when[0].values[0]", "", id="ap-when-source-ip-bad"),
    pytest.param(AP, _when("{key: destination.ip, notValues: [10.0.0.0/99]}"),
                 "spec.rules[0].when[0].notValues[0]", "", id="ap-when-destination-ip-bad"),
    pytest.param(AP, _when("{key: destination.port, notValues: ['99999']}"),
                 "spec.rules[0].when[0].notValues[0]", "", id="ap-when-port-bad"),
    pytest.param(AP, _when("{key: source.serviceAccount, values: ['default/*']}"),
                 "spec.rules[0].when[0].values[0]", "", id="ap-when-sa-wildcard"),
    pytest.param(AP, _when("{key: source.trustDomain, values: ['a*b']}"),
                 "spec.rules[0].when[0].values[0]", "", id="ap-when-trust-domain-middle-star"),
    pytest.param(AP, _when("{key: 'request.headers[x-user]', values: ['']}"),
                 "spec.rules[0].when[0].values[0]", "", id="ap-when-value-empty"),

    # -- selector / targetRef / targetRefs
    # validateOneOfSelectorType, and the CRD rule "only one of targetRefs or selector"
    pytest.param(AP, f"{SEL}\ntargetRefs: [{{kind: Gateway, group: "
                 "gateway.networking.k8s.io, name: gw}]\nrules: [{}]",
                 "spec.targetRefs", "", id="ap-selector-and-target-refs"),
    pytest.param(AP, "targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"
                 "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]",
                 "spec.targetRefs", "", id="ap-target-ref-and-target-refs"),
    pytest.param(AP, f"{SEL}\ntargetRef: {{kind: Gateway, group: "
                 "gateway.networking.k8s.io, name: gw}", "spec.targetRef", "",
                 id="ap-selector-and-target-ref"),
    # validatePolicyTargetReference and the CRD rules
    pytest.param(AP, "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, "
                 "name: gw, namespace: other}]", "spec.targetRefs[0].namespace", "",
                 id="ap-target-ref-namespace"),
    pytest.param(AP, "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io}]",
                 "spec.targetRefs[0].name", "", id="ap-target-ref-name-missing-crd"),
    pytest.param(AP, "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, "
                 "name: ''}]", "spec.targetRefs[0].name", "", id="ap-target-ref-name-empty"),
    pytest.param(AP, "targetRefs: [{kind: Deployment, group: apps, name: web}]",
                 "spec.targetRefs[0].kind", "", id="ap-target-ref-kind"),
    # Gateway is in gateway.networking.k8s.io, not the core group
    pytest.param(AP, "targetRef: {kind: Gateway, name: gw}", "spec.targetRef.kind", "",
                 id="ap-target-ref-group"),
    pytest.param(AP, "targetRefs: " + _many("{{kind: Service, name: s{i}}}", 17),
                 "spec.targetRefs", "", id="ap-target-refs-over-16-crd"),
    pytest.param(AP, "selector: {matchLabels: {app: '*'}}\nrules: [{}]",
                 "spec.selector.matchLabels.app", "", id="ap-selector-wildcard"),

    # -- istio.io/dry-run (checkDryRunAnnotation: strconv.ParseBool, ALLOW/DENY only)
    pytest.param(AP, "rules: [{}]", "metadata.annotations['istio.io/dry-run']",
                 DRY_RUN.format("yes"), id="ap-dry-run-not-a-boolean"),
    pytest.param(AP, "action: AUDIT\nrules: [{}]", "metadata.annotations['istio.io/dry-run']",
                 DRY_RUN.format("true"), id="ap-dry-run-with-audit"),
    pytest.param(AP, CUSTOM + "\nrules: [{}]", "metadata.annotations['istio.io/dry-run']",
                 DRY_RUN.format("true"), id="ap-dry-run-with-custom"),
]


@pytest.mark.parametrize(("kind", "spec", "path", "meta"), INVALID)
def test_refused(kind: str, spec: str, path: str, meta: str) -> None:
    errors = assert_invalid(kind, spec, path, metadata_extra=meta)
    for e in errors:
        assert e.message, e


# ---------------------------------------------------------------------------
# Accepted: (kind, spec, check of the typed result, metadata lines)

Check = Callable[[Any], None]


def _pa_empty(s: PeerAuthenticationSpec) -> None:
    assert s.selector is None and s.mtls is None and s.port_level_mtls is None


def _pa_strict(s: PeerAuthenticationSpec) -> None:
    assert s.mtls is not None and s.mtls.mode is MutualTLSMode.STRICT


def _pa_port_level(s: PeerAuthenticationSpec) -> None:
    ports = s.port_level_mtls
    assert isinstance(ports, PortLevelMtls)
    assert sorted(ports) == [8080, 9090]  # int keys, whether YAML wrote 9090 or "8080"
    assert all(isinstance(p, int) for p in ports)
    assert ports[9090].mode is MutualTLSMode.PERMISSIVE
    assert ports[8080].mode is MutualTLSMode.DISABLE
    assert s.selector is not None and dict(s.selector.match_labels) == {"app": "backend"}


def _pa_port_unset(s: PeerAuthenticationSpec) -> None:
    ports = s.port_level_mtls
    assert ports is not None
    assert ports[8080].mode is MutualTLSMode.UNSET  # {} : inherits
    assert ports[8081].mode is MutualTLSMode.UNSET  # no value: jsonpb reads an empty message
    assert ports[65535].mode is MutualTLSMode.STRICT


def _pa_numeric(s: PeerAuthenticationSpec) -> None:
    # protojson accepts enum numbers: STRICT = 3
    assert s.mtls is not None and s.mtls.mode is MutualTLSMode.STRICT


def _pa_mtls_empty(s: PeerAuthenticationSpec) -> None:
    assert s.mtls is not None and s.mtls.mode is MutualTLSMode.UNSET


def _ap_allow_nothing(s: AuthorizationPolicySpec) -> None:
    assert s.action is Action.ALLOW and s.rules == ()


def _ap_allow_all(s: AuthorizationPolicySpec) -> None:
    (rule,) = s.rules
    assert rule.from_ == () and rule.to == () and rule.when == ()


def _ap_deny_all(s: AuthorizationPolicySpec) -> None:
    assert s.action is Action.DENY and len(s.rules) == 1


def _ap_source(s: AuthorizationPolicySpec) -> None:
    src = s.rules[0].from_[0].source
    assert src is not None
    assert src.principals == ("cluster.local/ns/default/sa/frontend", "*/sa/admin")
    assert src.not_principals == ("cluster.local/ns/default/sa/evil*",)
    assert src.request_principals == ("issuer.example.com/alice",)
    assert src.not_request_principals == ("*",)
    assert src.namespaces == ("default", "team-*")
    assert src.not_namespaces == ("kube-system",)
    assert src.ip_blocks == ("10.0.0.0/8", "192.168.1.7", "2001:db8::/32")
    assert src.not_ip_blocks == ("10.0.0.1/8",)  # netip.ParsePrefix keeps host bits
    assert src.remote_ip_blocks == ("203.0.113.0/24",)
    assert src.not_remote_ip_blocks == ("fe80::1%eth0",)  # netip.ParseAddr allows a zone
    assert src.trust_domains == ("cluster.local", "*.example.org")
    assert src.not_trust_domains == ("*",)


def _ap_service_accounts(s: AuthorizationPolicySpec) -> None:
    src = s.rules[0].from_[0].source
    assert src is not None
    assert src.service_accounts == ("default/frontend", "gateway")
    assert src.not_service_accounts == ("default/legacy",)
    assert src.ip_blocks == ("10.0.0.0/8",)


def _ap_operation(s: AuthorizationPolicySpec) -> None:
    op = s.rules[0].to[0].operation
    assert op is not None
    assert op.hosts == ("api.example.com", "*.example.com")
    assert op.not_hosts == ("admin.example.com",)
    assert op.ports == ("8080", "0080")  # ParseUint accepts leading zeros
    assert op.not_ports == ("0",)  # 0..65535
    assert op.methods == ("GET", "HEAD")
    assert op.not_methods == ("DELETE",)
    assert op.paths == ("/api/{*}/items", "/files/{**}", "/static/*", "*.png", "/")
    assert op.not_paths == ("/api/internal/{**}",)


def _ap_when(s: AuthorizationPolicySpec) -> None:
    keys = [c.key for c in s.rules[0].when]
    assert len(keys) == 15
    assert keys[0] == "request.headers[x-user]"
    assert s.rules[0].when[1].not_values == ("10.0.0.0/8",)


def _ap_custom(s: AuthorizationPolicySpec) -> None:
    assert s.action is Action.CUSTOM
    assert s.provider is not None and s.provider.name == "ext-authz"


def _ap_audit(s: AuthorizationPolicySpec) -> None:
    assert s.action is Action.AUDIT


def _ap_numeric(s: AuthorizationPolicySpec) -> None:
    assert s.action is Action.DENY  # DENY = 1


def _ap_target_refs(s: AuthorizationPolicySpec) -> None:
    assert [(r.group, r.kind, r.name) for r in s.target_refs] == [
        ("gateway.networking.k8s.io", "Gateway", "waypoint"),
        ("", "Service", "backend"),
        ("core", "Service", "frontend"),
        ("networking.istio.io", "ServiceEntry", "external"),
    ]


def _ap_target_ref(s: AuthorizationPolicySpec) -> None:
    assert s.target_ref is not None and s.target_ref.kind == "GatewayClass"


def _ap_empty_from(s: AuthorizationPolicySpec) -> None:
    assert s.rules[0].from_ == ()  # like Istio: an empty list is no list
    assert s.rules[0].to[0].operation is not None


def _ap_any(s: AuthorizationPolicySpec) -> None:
    assert isinstance(s, AuthorizationPolicySpec)


def _pa_any(s: PeerAuthenticationSpec) -> None:
    assert isinstance(s, PeerAuthenticationSpec)


VALID: list[Any] = [
    pytest.param(PA, "{}", _pa_empty, "", id="pa-empty"),
    pytest.param(PA, "mtls: {mode: STRICT}", _pa_strict, "", id="pa-strict"),
    pytest.param(PA, "mtls: {mode: 3}", _pa_numeric, "", id="pa-numeric-mode"),
    pytest.param(PA, "mtls: {}", _pa_mtls_empty, "", id="pa-mtls-empty"),
    pytest.param(PA, f"""
        {SEL}
        mtls: {{mode: STRICT}}
        portLevelMtls:
          9090: {{mode: PERMISSIVE}}
          "8080": {{mode: DISABLE}}
        """, _pa_port_level, "", id="pa-port-level"),
    pytest.param(PA, f"""
        {SEL}
        portLevelMtls:
          8080: {{}}
          8081:
          65535: {{mode: STRICT}}
        """, _pa_port_unset, "", id="pa-port-level-unset"),
    # "selector-empty-value" in Istio's tests: an empty label value is fine
    pytest.param(PA, "selector: {matchLabels: {app: ''}}\nmtls: {mode: DISABLE}", _pa_any, "",
                 id="pa-selector-empty-value"),
    # validateWorkloadSelector only warns about a selector without labels
    pytest.param(PA, "selector: {}\nmtls: {mode: PERMISSIVE}", _pa_any, "",
                 id="pa-selector-without-labels"),
    pytest.param(AP, "{}", _ap_allow_nothing, "", id="ap-allow-nothing"),
    pytest.param(AP, SEL, _ap_allow_nothing, "", id="ap-allow-nothing-selector"),
    pytest.param(AP, "rules: [{}]", _ap_allow_all, "", id="ap-allow-all"),
    pytest.param(AP, "action: DENY\nrules: [{}]", _ap_deny_all, "", id="ap-deny-all"),
    pytest.param(AP, f"""
        {SEL}
        rules:
        - from:
          - source:
              principals: [cluster.local/ns/default/sa/frontend, '*/sa/admin']
              notPrincipals: ['cluster.local/ns/default/sa/evil*']
              requestPrincipals: [issuer.example.com/alice]
              notRequestPrincipals: ['*']
              namespaces: [default, 'team-*']
              notNamespaces: [kube-system]
              ipBlocks: [10.0.0.0/8, 192.168.1.7, '2001:db8::/32']
              notIpBlocks: [10.0.0.1/8]
              remoteIpBlocks: [203.0.113.0/24]
              notRemoteIpBlocks: ['fe80::1%eth0']
              trustDomains: [cluster.local, '*.example.org']
              notTrustDomains: ['*']
        """, _ap_source, "", id="ap-every-source-field"),
    pytest.param(AP, _src("{serviceAccounts: [default/frontend, gateway], "
                          "notServiceAccounts: [default/legacy], ipBlocks: [10.0.0.0/8]}"),
                 _ap_service_accounts, "", id="ap-service-accounts"),
    pytest.param(AP, _op("""{hosts: [api.example.com, '*.example.com'],
        notHosts: [admin.example.com], ports: ['8080', '0080'], notPorts: ['0'],
        methods: [GET, HEAD], notMethods: [DELETE],
        paths: ['/api/{*}/items', '/files/{**}', '/static/*', '*.png', /],
        notPaths: ['/api/internal/{**}']}"""), _ap_operation, "", id="ap-every-operation-field"),
    pytest.param(AP, """
        rules:
        - when:
          - {key: 'request.headers[x-user]', values: [alice, 'bob*']}
          - {key: source.ip, notValues: [10.0.0.0/8]}
          - {key: remote.ip, values: ['2001:db8::1']}
          - {key: source.namespace, values: [default]}
          - {key: source.principal, values: [cluster.local/ns/default/sa/a]}
          - {key: source.serviceAccount, values: [default/a, b]}
          - {key: source.trustDomain, values: ['*.local']}
          - {key: request.auth.principal, values: [iss/sub]}
          - {key: request.auth.audiences, values: [api]}
          - {key: request.auth.presenter, values: [web]}
          - {key: 'request.auth.claims[groups][admin]', values: ['yes']}
          - {key: destination.ip, values: [10.1.2.3]}
          - {key: destination.port, values: ['8080', '0']}
          - {key: connection.sni, values: ['*.example.com']}
          - {key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[x]']}
        """, _ap_when, "", id="ap-every-when-key"),
    # CUSTOM may match on IPs, operations and the other when keys
    pytest.param(AP, """
        action: CUSTOM
        provider: {name: ext-authz}
        rules:
        - from: [{source: {ipBlocks: [10.0.0.0/8]}}]
          to: [{operation: {paths: [/admin/*]}}]
          when: [{key: 'request.headers[x-token]', values: ['*']}]
        """, _ap_custom, "", id="ap-custom"),
    pytest.param(AP, "action: AUDIT\nrules: [{to: [{operation: {methods: [POST]}}]}]",
                 _ap_audit, "", id="ap-audit"),
    pytest.param(AP, "action: 1\nrules: [{}]", _ap_numeric, "", id="ap-numeric-action"),
    # strconv.ParseBool accepts 1/t/T/TRUE/true/True and 0/f/F/FALSE/false/False
    pytest.param(AP, "rules: [{}]", _ap_any, DRY_RUN.format("true"), id="ap-dry-run-true"),
    pytest.param(AP, "action: DENY\nrules: [{}]", _ap_any, DRY_RUN.format("F"),
                 id="ap-dry-run-go-bool"),
    pytest.param(AP, """
        targetRefs:
        - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
        - {kind: Service, group: '', name: backend}
        - {kind: Service, group: core, name: frontend}
        - {kind: ServiceEntry, group: networking.istio.io, name: external}
        action: DENY
        rules: [{to: [{operation: {ports: ['8080']}}]}]
        """, _ap_target_refs, "", id="ap-target-refs"),
    pytest.param(AP, "targetRef: {kind: GatewayClass, group: gateway.networking.k8s.io, "
                 "name: istio}\nrules: [{}]", _ap_target_ref, "", id="ap-target-ref"),
    # jsonpb reads `from: []` as no `from`, so Istio's "from must not be empty" never fires
    pytest.param(AP, "rules: [{from: [], to: [{operation: {methods: [GET]}}]}]",
                 _ap_empty_from, "", id="ap-empty-from-list"),
    # Istio accepts these (a '*' in the middle is literal; spiffe:// never matches): warnings
    pytest.param(AP, _src("{principals: ['spiffe://cluster.local/ns/a/sa/b', 'a*b']}"),
                 _ap_any, "", id="ap-odd-principals"),
    pytest.param(AP, _op("{paths: ['/api/*/users'], hosts: ['a.*.com'], methods: [get]}"),
                 _ap_any, "", id="ap-odd-operation"),
    # jsonpb does not check the key of request.headers beyond "a[b]"
    pytest.param(AP, _when("{key: 'request.headers[:authority]', values: ['*']}"), _ap_any, "",
                 id="ap-when-pseudo-header"),
]


@pytest.mark.parametrize(("kind", "spec", "check", "meta"), VALID)
def test_accepted(kind: str, spec: str, check: Check, meta: str) -> None:
    result = assert_valid(kind, spec, metadata_extra=meta)
    check(result.resources[0].spec)


def test_enough_cases() -> None:
    assert len(INVALID) >= 45
    assert len(VALID) >= 18


# ---------------------------------------------------------------------------
# Warnings: accepted, with a warning at a path that says something specific

WARNED: list[Any] = [
    # Istio's own warnings
    pytest.param(PA, "selector: {}", "spec.selector", "selects every workload",
                 id="pa-selector-without-labels"),
    pytest.param(AP, "action: DENY\nrules: [{to: [{operation: {paths: [/admin]}}]}]",
                 "spec.rules[0]", "TCP", id="ap-deny-http-only-to"),
    pytest.param(AP, "action: DENY\nrules: [{from: [{source: {trustDomains: [x.org]}}]}]",
                 "spec.rules[0]", "TCP", id="ap-deny-http-only-from"),
    # support metadata (rules and action are enforced: no hint; CUSTOM is partial)
    pytest.param(AP, CUSTOM + "\nrules: [{}]", "spec.provider", "partly enforced",
                 id="ap-custom-partly-enforced"),
    # JWT-based fields: inmesh reads no JWT yet
    pytest.param(AP, _src("{requestPrincipals: [iss/sub]}"),
                 "spec.rules[0].from[0].source.requestPrincipals", "never match",
                 id="ap-request-principals-jwt"),
    pytest.param(AP, _src("{notRequestPrincipals: ['*']}"),
                 "spec.rules[0].from[0].source.notRequestPrincipals", "always match",
                 id="ap-not-request-principals-jwt"),
    pytest.param(AP, _when("{key: 'request.auth.claims[groups]', values: [admin]}"),
                 "spec.rules[0].when[0].key", "JWT", id="ap-when-request-auth-jwt"),
    # inmesh hints
    pytest.param(AP, _src("{principals: ['spiffe://cluster.local/ns/a/sa/b']}"),
                 "spec.rules[0].from[0].source.principals[0]", "spiffe://spiffe://",
                 id="ap-principal-spiffe-prefix"),
    pytest.param(AP, _when("{key: source.principal, values: ['spiffe://td/ns/a/sa/b']}"),
                 "spec.rules[0].when[0].values[0]", "never matches",
                 id="ap-when-principal-spiffe-prefix"),
    pytest.param(AP, _op("{paths: ['/api/*/users']}"),
                 "spec.rules[0].to[0].operation.paths[0]", "compared literally",
                 id="ap-path-middle-star"),
    pytest.param(AP, _op("{notHosts: ['*.example.*']}"),
                 "spec.rules[0].to[0].operation.notHosts[0]", "compared literally",
                 id="ap-host-two-stars"),
    pytest.param(AP, _op("{methods: [get]}"), "spec.rules[0].to[0].operation.methods[0]",
                 "upper case", id="ap-method-lower-case"),
    pytest.param(AP, _op("{paths: [admin]}"), "spec.rules[0].to[0].operation.paths[0]",
                 "start with '/'", id="ap-path-without-slash"),
    pytest.param(AP, _op("{paths: ['/search?q=x']}"), "spec.rules[0].to[0].operation.paths[0]",
                 "query", id="ap-path-with-query"),
    pytest.param(AP, "rules: [{from: [], to: [{operation: {methods: [GET]}}]}]",
                 "spec.rules[0].from", "any source", id="ap-empty-from"),
    pytest.param(AP, "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, "
                 "name: gw}]\nrules: [{}]", "spec.targetRefs", "ignore",
                 id="ap-target-refs-ignored"),
    pytest.param(AP, "action: AUDIT", "spec.rules", "never", id="ap-audit-without-rules"),
    pytest.param(AP, _when("{key: 'experimental.envoy.filters.a[b]', values: [x]}"),
                 "spec.rules[0].when[0].key", "Envoy filter metadata",
                 id="ap-when-experimental"),
    pytest.param(AP, _src("{namespaces: [Default]}"),
                 "spec.rules[0].from[0].source.namespaces[0]", "lower-case",
                 id="ap-namespace-upper-case"),
    pytest.param(PA, "selector: {matchLabels: {app: 'a b'}}", "spec.selector.matchLabels.app",
                 "not a valid Kubernetes label", id="pa-selector-label-syntax"),
    pytest.param(PA, f"{SEL}\nportLevelMtls: {{80: {{mode: STRICT}}, '080': {{mode: DISABLE}}}}",
                 "spec.portLevelMtls['080']", "both name port 80", id="pa-duplicate-port"),
]


@pytest.mark.parametrize(("kind", "spec", "path", "text"), WARNED)
def test_warned(kind: str, spec: str, path: str, text: str) -> None:
    result = load_spec(kind, spec)
    assert not result.errors, "\n".join(str(e) for e in result.errors)
    assert len(result.resources) == 1
    found = [w for w in result.warnings if w.path == path]
    assert found, f"no warning at {path}; got: " + "; ".join(str(w) for w in result.warnings)
    assert any(text in f"{w.message}; {w.fix}" for w in found), "; ".join(map(str, found))
    assert all(w.line > 0 for w in found)


def test_deny_with_ports_has_no_tcp_warning() -> None:
    # "L7DenyWithFromAndToWithPort" in Istio's tests: naming the port avoids the warning
    result = load_spec(AP, """
        action: DENY
        rules:
        - from: [{source: {requestPrincipals: ['*']}}]
          to: [{operation: {paths: [/admin], ports: ['8080']}}]
        """)
    assert not result.errors
    assert not [w for w in result.warnings if "TCP" in w.message]


def test_jwt_warning_is_given_once_per_field() -> None:
    result = load_spec(AP, _src("{requestPrincipals: [a/b, c/d]}"))
    jwt = [w for w in result.warnings if "JWT" in w.message]
    assert len(jwt) == 1
    assert jwt[0].path == "spec.rules[0].from[0].source.requestPrincipals"


def test_plain_policies_have_no_hints() -> None:
    result = load_spec(AP, f"""
        {SEL}
        rules:
        - from: [{{source: {{principals: [cluster.local/ns/default/sa/frontend]}}}}]
          to: [{{operation: {{methods: [GET], paths: ['/api/*']}}}}]
        """)
    assert not result.errors
    # rules and action are enforced by the inbound middleware: nothing to warn about
    assert [w.path for w in result.warnings] == []


def test_error_messages_say_how_to_fix() -> None:
    errors = assert_invalid(AP, "action: DENY", "spec.rules")
    (error,) = errors
    assert "DENY" in error.message and "rules: [{}]" in error.fix
    assert error.severity is Severity.ERROR


# ---------------------------------------------------------------------------
# Seeds, corpus, and round trips


@pytest.mark.parametrize(
    "name",
    ["01-peer-authentication-strict.yaml", "02-authz-allow-frontend-to-backend.yaml"],
)
def test_seed_files_load_without_errors(name: str) -> None:
    result = load_paths([SEEDS / name])
    assert not result.errors, "\n".join(str(e) for e in result.errors)
    (resource,) = result.resources
    assert resource.kind in (PA, AP)


def test_seed_typed_values() -> None:
    result = load_paths(
        [SEEDS / "01-peer-authentication-strict.yaml", SEEDS / "02-authz-allow-frontend-to-backend.yaml"]
    )
    pa, ap = result.resources
    assert pa.spec.mtls.mode is MutualTLSMode.STRICT
    assert pa.spec.selector is None
    assert ap.spec.action is Action.ALLOW
    assert dict(ap.spec.selector.match_labels) == {"app": "backend"}
    source = ap.spec.rules[0].from_[0].source
    assert source.principals == ("cluster.local/ns/default/sa/frontend-sa",)


def test_rich_security_corpus_loads() -> None:
    result = load_paths([CORPUS / "13-rich-security.yaml"])
    assert not result.errors, "\n".join(str(e) for e in result.errors)
    assert [r.kind for r in result.resources] == [PA, AP, AP]
    pa = result.resources[0].spec
    assert pa.port_level_mtls is not None and pa.port_level_mtls[9090].mode is MutualTLSMode.PERMISSIVE


def test_port_level_mtls_dumps_and_reloads() -> None:
    result = assert_valid(PA, f"{SEL}\nportLevelMtls: {{9090: {{mode: PERMISSIVE}}}}")
    data = resource_to_data(result.resources[0])
    assert data["spec"]["portLevelMtls"] == {"9090": {"mode": "PERMISSIVE"}}
    import yaml

    again = load_text(yaml.safe_dump(data))
    assert not again.errors
    assert again.resources[0].spec == result.resources[0].spec


def test_peer_authn_precedence_reads_the_model() -> None:
    from inmesh.policy.peer_authn import (
        MtlsMode,
        effective_peer_authentication,
        policies_from_snapshot,
    )

    result = load_paths([CORPUS / "13-rich-security.yaml"])
    policies = policies_from_snapshot(r for r in result.resources if r.kind == PA)
    eff = effective_peer_authentication(policies, namespace="default", labels={"app": "backend"})
    assert eff.mode is MtlsMode.STRICT
    assert eff.for_port(9090) is MtlsMode.PERMISSIVE


def test_peer_authentication_is_enforced_so_no_warning() -> None:
    result = load_spec("PeerAuthentication", "mtls: {mode: STRICT}")
    assert not [w for w in result.warnings if "not enforced" in w.message]
