"""AuthorizationPolicy checks, after Istio's own.

Two gates decide whether Istio takes an AuthorizationPolicy, and both are
reproduced here as errors:

- the validating webhook / ``istioctl validate``: istio/istio
  ``pkg/config/validation/validation.go`` (``ValidateAuthorizationPolicy``,
  ``validateOneOfSelectorType``, ``validateWorkloadSelector``,
  ``validatePolicyTargetReference``, ``checkDryRunAnnotation``) with the
  helpers of ``pkg/config/security/security.go`` (``ValidateAttribute``,
  ``ValidateIPs``, ``ValidatePorts``, ``CheckServiceAccount``,
  ``CheckTrustDomainValues``, ``CheckValidPathTemplate``);
- the CRD schema the Kubernetes API server applies first (list sizes and CEL
  rules from the kubebuilder markers in istio/api
  ``security/v1beta1/authorization_policy.proto`` and
  ``type/v1beta1/selector.proto``). Comments say "(CRD)" where a rule exists
  only there.

Istio's warnings stay warnings. Hints Istio does not give are warnings too,
and their comments say "inmesh hint". In particular Istio *accepts* a ``*``
in the middle of a principal, host, method or path and then matches it as a
literal character; inmesh warns about it instead of refusing it.

Istio reads YAML through jsonpb, which turns an empty list into an absent
one: ``rules: []`` is "no rules" and ``from: []`` is "any source". The webhook's
"`from` must not be empty" check therefore never fires for YAML input, and
inmesh warns about ``from: []`` / ``to: []`` rather than refusing them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from .._schema import Reporter, Support, fields_of, format_path
from .._yaml import Path
from ..resources._security_types import PolicyTargetReference
from ..resources.authorization_policy import (
    Action,
    AuthorizationPolicySpec,
    Condition,
    Operation,
    Rule,
    Source,
)
from ._common import ip_subnet_problem
from .peer_authentication import DRY_RUN_ANNOTATION, check_workload_selector

__all__ = ["validate_authorization_policy"]

# -- limits from the CRD schema and security.go ---------------------------------
_MAX_RULES = 512  # (CRD) maxItems
_MAX_FROM = 512  # (CRD) maxItems
_MAX_TARGET_REFS = 16  # (CRD) maxItems
_MAX_SERVICE_ACCOUNTS = 16  # CheckServiceAccount, and (CRD) maxItems
_MAX_SERVICE_ACCOUNT_LEN = 320  # CheckServiceAccount, and (CRD) maxLength
_MAX_TARGET_NAME_LEN = 253  # (CRD) maxLength

# strconv.ParseBool, which checkDryRunAnnotation and the RBAC builder use
_GO_BOOLS = frozenset(
    {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
)

# validatePolicyTargetReference: (canonical group, kind); group "" means "core"
_TARGET_KINDS = (
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
)

# security.go: an RFC 3986 pchar literal, for path-template segments
_PATH_LITERAL_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()+,;:@=]+")
_ONE_SEGMENT = "{*}"
_ANY_SEGMENTS = "{**}"
_DIGITS_RE = re.compile(r"[0-9]+")

# -- the fields of Source and Operation, with how each is checked ---------------
# (attribute, YAML name, check)
_SOURCE_FIELDS = (
    ("principals", "principals", "principal"),
    ("not_principals", "notPrincipals", "principal"),
    ("request_principals", "requestPrincipals", "jwt"),
    ("not_request_principals", "notRequestPrincipals", "jwt"),
    ("namespaces", "namespaces", "namespace"),
    ("not_namespaces", "notNamespaces", "namespace"),
    ("service_accounts", "serviceAccounts", "service_account"),
    ("not_service_accounts", "notServiceAccounts", "service_account"),
    ("ip_blocks", "ipBlocks", "ip"),
    ("not_ip_blocks", "notIpBlocks", "ip"),
    ("remote_ip_blocks", "remoteIpBlocks", "ip"),
    ("not_remote_ip_blocks", "notRemoteIpBlocks", "ip"),
    ("trust_domains", "trustDomains", "trust_domain"),
    ("not_trust_domains", "notTrustDomains", "trust_domain"),
)
# ValidateAuthorizationPolicy: the source fields a CUSTOM rule may not use
_NOT_WITH_CUSTOM = frozenset(
    {
        "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
        "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
        "trustDomains", "notTrustDomains",
    }
)  # fmt: skip
# ... and the `when` keys (plus every request.auth.* key)
_KEYS_NOT_WITH_CUSTOM = frozenset(
    {"source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal"}
)
# The source fields that make a rule meaningful on TCP (tcpRulesInFrom in validation.go;
# Istio leaves trustDomains out of this list, and so does inmesh).
_TCP_SOURCE_FIELDS = frozenset(
    {
        "principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks",
        "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks", "serviceAccounts",
        "notServiceAccounts",
    }
)  # fmt: skip
_SERVICE_ACCOUNT_CONFLICTS = ("principals", "notPrincipals", "namespaces", "notNamespaces")

_OPERATION_FIELDS = (
    ("hosts", "hosts", "host"),
    ("not_hosts", "notHosts", "host"),
    ("ports", "ports", "port"),
    ("not_ports", "notPorts", "port"),
    ("methods", "methods", "method"),
    ("not_methods", "notMethods", "method"),
    ("paths", "paths", "path"),
    ("not_paths", "notPaths", "path"),
)

# -- `when` keys (security.go ValidateAttribute) ---------------------------------
_EXACT_KEYS = {
    "source.ip": "ip",
    "remote.ip": "ip",
    "source.namespace": "namespace",
    "source.serviceAccount": "service_account",
    "source.principal": "principal",
    "source.trustDomain": "wildcard",
    "request.auth.principal": "jwt",
    "request.auth.audiences": "jwt",
    "request.auth.presenter": "jwt",
    "destination.ip": "ip",
    "destination.port": "port",
    "connection.sni": "string",
}
_MAP_KEYS = (  # (prefix, how to check the values, the form, an example)
    ("request.headers", "header", "request.headers[<name>]", "request.headers[x-user]"),
    ("request.auth.claims", "jwt", "request.auth.claims[<claim>]", "request.auth.claims[groups]"),
    (
        "experimental.envoy.filters.",
        "experimental",
        "experimental.envoy.filters.<filter>[<key>]",
        "experimental.envoy.filters.network.mysql_proxy[db.table]",
    ),
)
_KNOWN_KEYS = (_MAP_KEYS[0][2], *_EXACT_KEYS, _MAP_KEYS[1][2], _MAP_KEYS[2][2])
_SPIFFE = "spiffe://"
_PATTERN_FIX = "use an exact value, a prefix (abc*), a suffix (*abc) or '*' alone"


# ---------------------------------------------------------------------------
# The policy


def validate_authorization_policy(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidateAuthorizationPolicy`` plus the CRD rules, on a parsed resource."""
    spec: AuthorizationPolicySpec = resource.spec
    annotations: Mapping[str, str] = resource.metadata.annotations

    _check_dry_run(annotations, spec.action, rep)
    _check_scope(spec, rep)
    _check_action(spec, rep)
    if len(spec.rules) > _MAX_RULES:  # (CRD) maxItems
        rep.error(
            ("spec", "rules"),
            f"{len(spec.rules)} rules is more than the {_MAX_RULES} Istio allows",
            "merge rules, or split the policy",
        )
    for i, rule in enumerate(spec.rules):
        _check_rule(rule, ("spec", "rules", i), spec.action, rep)
    _check_allow_nothing(spec, rep)


def _check_dry_run(annotations: Mapping[str, str], action: Action, rep: Reporter) -> None:
    """``checkDryRunAnnotation``: ALLOW and DENY only, and a Go boolean."""
    value = annotations.get(DRY_RUN_ANNOTATION)
    if value is None:
        return
    path: Path = ("metadata", "annotations", DRY_RUN_ANNOTATION)
    if action not in (Action.ALLOW, Action.DENY):
        rep.error(
            path,
            f"the {DRY_RUN_ANNOTATION} annotation works only with action ALLOW or DENY, "
            f"not {action.value}",
            "remove the annotation",
        )
    elif value not in _GO_BOOLS:
        rep.error(
            path,
            f'{DRY_RUN_ANNOTATION} must be "true" or "false", got {value!r}',
            f'write {DRY_RUN_ANNOTATION}: "true" to evaluate the policy without enforcing it',
        )


def _check_scope(spec: AuthorizationPolicySpec, rep: Reporter) -> None:
    """Selector, targetRef and targetRefs: each valid, and at most one of them."""
    check_workload_selector(spec.selector, ("spec", "selector"), rep)
    refs_set = bool(spec.target_refs) or _written(rep, ("spec", "targetRefs"))
    count = (spec.selector is not None) + (spec.target_ref is not None) + refs_set
    if count > 1:
        # validateOneOfSelectorType, and the CRD rule on selector/targetRef/targetRefs
        where: Path = ("spec", "targetRefs") if refs_set else ("spec", "targetRef")
        set_names = [
            name
            for name, present in (
                ("selector", spec.selector is not None),
                ("targetRef", spec.target_ref is not None),
                ("targetRefs", refs_set),
            )
            if present
        ]
        rep.error(
            where,
            f"only one of selector, targetRef and targetRefs may be set, got "
            f"{' and '.join(set_names)}",
            "sidecars use selector, gateways and waypoints use targetRefs: write one "
            "policy for each",
        )
    if spec.target_ref is not None:
        _check_target_ref(spec.target_ref, ("spec", "targetRef"), rep)
    if len(spec.target_refs) > _MAX_TARGET_REFS:  # (CRD) maxItems
        rep.error(
            ("spec", "targetRefs"),
            f"{len(spec.target_refs)} targetRefs is more than the {_MAX_TARGET_REFS} Istio allows",
            "split the policy",
        )
    for i, ref in enumerate(spec.target_refs):
        _check_target_ref(ref, ("spec", "targetRefs", i), rep)
    if spec.selector is None and (spec.target_ref is not None or spec.target_refs):
        # inmesh hint: a sidecar (and so inmesh) ignores a policy attached by targetRefs.
        rep.warn(
            ("spec", "targetRef" if spec.target_ref is not None else "targetRefs"),
            "this policy is attached to gateways or waypoints by a target reference; "
            "sidecars, and so inmesh, ignore it",
            "to apply it to workloads served by inmesh, use selector.matchLabels instead",
        )


def _check_target_ref(ref: PolicyTargetReference, path: Path, rep: Reporter) -> None:
    """``validatePolicyTargetReference`` plus the CRD limits."""
    if not ref.name:
        rep.error((*path, "name"), "targetRef name must be set", "name the Gateway or Service")
    elif len(ref.name) > _MAX_TARGET_NAME_LEN:  # (CRD) maxLength
        rep.error(
            (*path, "name"),
            f"targetRef name is {len(ref.name)} characters long; Istio allows at most "
            f"{_MAX_TARGET_NAME_LEN}",
        )
    if ref.namespace:
        rep.error(
            (*path, "namespace"),
            "targetRef namespace must not be set: cross-namespace references are not supported",
            "remove namespace and put the policy in the namespace of its target",
        )
    group = ref.group or "core"
    if (group, ref.kind) not in _TARGET_KINDS:
        rep.error(
            (*path, "kind"),
            f"targetRef cannot point at {ref.kind or '(no kind)'} in group {ref.group!r}",
            "use one of: Service (group '' or core), ServiceEntry (networking.istio.io), "
            "Gateway or GatewayClass (gateway.networking.k8s.io)",
        )


def _check_action(spec: AuthorizationPolicySpec, rep: Reporter) -> None:
    """The action / provider / rules combinations of ``ValidateAuthorizationPolicy``."""
    action = spec.action
    if action is Action.CUSTOM:
        if not spec.rules:
            rep.error(
                ("spec", "rules"),
                "a CUSTOM policy without rules is never triggered",
                "add rules; an empty rule (rules: [{}]) sends every request to the authorizer",
            )
        elif spec.provider is None:
            rep.error(
                ("spec", "provider"),
                "a CUSTOM policy needs provider.name",
                "name the authorizer: provider: {name: my-authorizer}",
            )
        elif not spec.provider.name:
            rep.error(
                ("spec", "provider", "name"),
                "provider.name must not be empty",
                "name the authorizer that decides these requests",
            )
    if spec.provider is not None and action is not Action.CUSTOM:
        rep.error(
            ("spec", "provider"),
            f"provider is only used with action CUSTOM, but the action is {action.value}",
            "set action: CUSTOM, or remove provider",
        )
    if action is Action.DENY and not spec.rules:
        rep.error(
            ("spec", "rules"),
            "a DENY policy without rules is never triggered",
            "add rules; an empty rule (rules: [{}]) denies every request",
        )
    if action is Action.AUDIT and not spec.rules:
        # inmesh hint: Istio accepts it, but it matches nothing.
        rep.warn(
            ("spec", "rules"),
            "an AUDIT policy without rules never marks a request",
            "add rules; an empty rule (rules: [{}]) audits every request",
        )


def _check_allow_nothing(spec: AuthorizationPolicySpec, rep: Reporter) -> None:
    """Say what an ALLOW policy without rules does (and that it is not enforced yet)."""
    if spec.action is not Action.ALLOW or spec.rules:
        return
    message = (
        "an ALLOW policy without rules matches no request, so the workloads it selects "
        "deny every request that no other ALLOW policy allows"
    )
    rules_field = next(f for f in fields_of(AuthorizationPolicySpec) if f.attr == "rules")
    if rules_field.support is Support.NOT_YET:
        if not (_written(rep, ("spec", "rules")) or _written(rep, ("spec", "action"))):
            # Otherwise the parser has already said that rules/action are not enforced.
            rep.warn(
                ("spec",),
                message + " (AuthorizationPolicy is parsed but not enforced yet)",
                rules_field.note,
            )
        return
    rep.info(("spec",), message, "add rules to allow some requests")


# ---------------------------------------------------------------------------
# Rules


def _check_rule(rule: Rule, path: Path, action: Action, rep: Reporter) -> None:
    custom = action is Action.CUSTOM
    if not rule.from_ and _written(rep, (*path, "from")):
        _warn_empty_list(rep, (*path, "from"), "source")
    if len(rule.from_) > _MAX_FROM:  # (CRD) maxItems
        rep.error(
            (*path, "from"),
            f"{len(rule.from_)} from entries is more than the {_MAX_FROM} Istio allows",
            "merge sources: each source field takes a list",
        )
    from_exists = tcp_in_from = False
    for j, item in enumerate(rule.from_):
        fpath: Path = (*path, "from", j)
        if item.source is None:
            rep.error(
                (*fpath, "source"),
                f"from[{j}] has no source",
                "write from: [{source: {...}}], or remove the entry",
            )
            continue
        from_exists = True
        tcp_in_from |= _check_source(item.source, (*fpath, "source"), custom, rep)

    if not rule.to and _written(rep, (*path, "to")):
        _warn_empty_list(rep, (*path, "to"), "operation")
    to_exists = tcp_in_to = False
    for j, target in enumerate(rule.to):
        tpath: Path = (*path, "to", j)
        if target.operation is None:
            rep.error(
                (*tpath, "operation"),
                f"to[{j}] has no operation",
                "write to: [{operation: {...}}], or remove the entry",
            )
            continue
        to_exists = True
        tcp_in_to |= _check_operation(target.operation, (*tpath, "operation"), rep)

    for k, condition in enumerate(rule.when):
        _check_condition(condition, (*path, "when", k), custom, rep)

    if action is Action.DENY and (
        (from_exists and not to_exists and not tcp_in_from) or (to_exists and not tcp_in_to)
    ):
        # validation.go warns: a DENY rule with only HTTP attributes denies all TCP traffic.
        rep.warn(
            path,
            "this DENY rule uses only HTTP attributes, so on a TCP (non-HTTP) port, where "
            "they cannot be checked, it matches and denies every connection",
            "name the ports it is for in to.operation.ports",
        )


def _warn_empty_list(rep: Reporter, path: Path, what: str) -> None:
    # inmesh hint: Istio's webhook refuses an empty from/to, but YAML never reaches that
    # check: jsonpb reads an empty list as an absent one, which matches everything.
    name = path[-1]
    rep.warn(
        path,
        f"an empty {name!s} list is read as no {name!s} at all, so this rule matches any {what}",
        f"remove {name!s}, or list at least one {what}",
    )


def _check_source(source: Source, path: Path, custom: bool, rep: Reporter) -> bool:
    """Check one ``source``; return whether it uses a field Istio can check on TCP."""
    present = [(attr, yaml, check) for attr, yaml, check in _SOURCE_FIELDS if getattr(source, attr)]
    if not present:
        rep.error(
            path,
            "source is empty",
            "set at least one field, e.g. principals or namespaces; to match any source, "
            "remove the from entry",
        )
        return False
    used = {yaml for _, yaml, _ in present}
    conflicts = [name for name in _SERVICE_ACCOUNT_CONFLICTS if name in used]
    accounts = [name for name in ("serviceAccounts", "notServiceAccounts") if name in used]
    if conflicts and accounts:
        # validation.go, and the CRD rule on Source
        rep.error(
            (*path, accounts[0]),
            f"{accounts[0]} cannot be combined with {' or '.join(conflicts)} in one source",
            "use serviceAccounts alone, or write the identities as principals",
        )
    for attr, yaml, check in present:
        fpath: Path = (*path, yaml)
        values: tuple[str, ...] = getattr(source, attr)
        if custom and yaml in _NOT_WITH_CUSTOM:
            rep.error(
                fpath,
                f"{yaml} cannot be used in a CUSTOM policy",
                "move this check to an ALLOW or DENY policy, or let the CUSTOM authorizer "
                "check the caller",
            )
        _check_values(check, values, fpath, rep, negated=yaml.startswith("not"))
    return bool(used & _TCP_SOURCE_FIELDS)


def _check_operation(operation: Operation, path: Path, rep: Reporter) -> bool:
    """Check one ``operation``; return whether it names ports (meaningful on TCP)."""
    present = [
        (attr, yaml, check) for attr, yaml, check in _OPERATION_FIELDS if getattr(operation, attr)
    ]
    if not present:
        rep.error(
            path,
            "operation is empty",
            "set at least one field, e.g. paths or methods; to match any operation, remove "
            "the to entry",
        )
        return False
    for attr, yaml, check in present:
        _check_values(check, getattr(operation, attr), (*path, yaml), rep, negated=False)
    return bool(operation.ports or operation.not_ports)


def _check_condition(condition: Condition, path: Path, custom: bool, rep: Reporter) -> None:
    key = condition.key or ""
    kpath: Path = (*path, "key")
    if not key:
        rep.error(kpath, "condition key must not be empty", "name an attribute, e.g. source.ip")
        return
    if not condition.values and not condition.not_values:
        rep.error(
            path,
            f"condition {key!r} needs values or notValues",
            "list the values the attribute must (values) or must not (notValues) have",
        )
        return
    check, problem, fix = _attribute(key)
    if problem:
        rep.error(kpath, problem, fix)
    if custom and (key in _KEYS_NOT_WITH_CUSTOM or key.startswith("request.auth.")):
        rep.error(
            kpath,
            f"condition key {key!r} cannot be used in a CUSTOM policy",
            "move this condition to an ALLOW or DENY policy, or let the CUSTOM authorizer check it",
        )
    if check == "jwt":
        _warn_once(
            rep,
            kpath,
            f"{key} needs a JWT (RequestAuthentication), which inmesh does not read yet: "
            "every request looks unauthenticated, so values never match and notValues "
            "always match",
            "authenticate callers by their mTLS identity (source.principal, "
            "source.namespace) in inmesh",
        )
    elif check == "experimental":
        # inmesh hint: there is no Envoy filter metadata in inmesh.
        rep.warn(
            kpath,
            f"{key} reads Envoy filter metadata, which does not exist in inmesh: values "
            "never match and notValues always match",
            "match on another attribute",
        )
    for attr, yaml in (("values", "values"), ("not_values", "notValues")):
        values: tuple[str, ...] = getattr(condition, attr)
        if not values:
            continue
        vpath: Path = (*path, yaml)
        _check_values("string" if problem else check, values, vpath, rep, negated=yaml != "values")


def _attribute(key: str) -> tuple[str, str, str]:
    """``ValidateAttribute`` on a key: (how to check the values, problem, fix)."""
    for prefix, check, form, example in _MAP_KEYS:
        if key.startswith(prefix):
            # validateMapKey: "a[b]" with a non-empty b
            open_at = key.find("[")
            if key.endswith("]") and 0 < open_at < len(key) - 2:
                return check, "", ""
            return check, f"condition key {key!r} should have the form {form}", f"e.g. {example}"
    exact = _EXACT_KEYS.get(key)
    if exact is not None:
        return exact, "", ""
    if key == "destination.namespace":
        return (
            "string",
            "destination.namespace is not a condition: the policy applies in its own "
            "namespace (metadata.namespace)",
            "put the policy in the namespace of the workloads it is for",
        )
    if key.startswith("destination.labels"):
        return (
            "string",
            "destination.labels is not a condition: the selector chooses the workloads",
            "select them with spec.selector.matchLabels",
        )
    if key in ("destination.name", "destination.user"):
        return (
            "string",
            f"{key} was only supported by the old v1alpha1 API",
            "select the workload with spec.selector.matchLabels",
        )
    close = difflib.get_close_matches(key, [k for k in _EXACT_KEYS], n=1, cutoff=0.7)
    fix = f"did you mean {close[0]!r}? " if close else ""
    return (
        "string",
        f"unknown attribute {key!r}",
        fix + "the attributes are: " + ", ".join(_KNOWN_KEYS),
    )


# ---------------------------------------------------------------------------
# Values


def _check_values(
    check: str, values: tuple[str, ...], path: Path, rep: Reporter, *, negated: bool
) -> None:
    """The checks of one list of values; ``check`` says what the values are."""
    if check == "service_account" and len(values) > _MAX_SERVICE_ACCOUNTS:
        # CheckServiceAccount, and (CRD) maxItems
        rep.error(
            path,
            f"{len(values)} service accounts is more than the {_MAX_SERVICE_ACCOUNTS} Istio allows",
            "split them over several sources (from entries)",
        )
    if check == "jwt" and path[-1] in ("requestPrincipals", "notRequestPrincipals"):
        result = "never match" if not negated else "always match"
        _warn_once(
            rep,
            path,
            f"{path[-1]} needs a JWT (RequestAuthentication), which inmesh does not read "
            f"yet: every request looks unauthenticated, so these values {result}",
            "authenticate callers by their mTLS identity (principals, namespaces or "
            "serviceAccounts) in inmesh",
        )
    for i, value in enumerate(values):
        vpath: Path = (*path, i)
        if not value:  # CheckEmptyValues
            rep.error(vpath, "empty value", "remove it, or write '*' to match any non-empty value")
            continue
        _check_value(check, value, vpath, rep)


def _check_value(check: str, value: str, path: Path, rep: Reporter) -> None:
    if check == "ip":
        problem = ip_subnet_problem(value)  # ValidateIPs
        if problem:
            rep.error(
                path,
                f"{value!r} is not {problem}",
                "write an IP address (10.0.0.1) or a CIDR block (10.0.0.0/8)",
            )
    elif check == "port":
        # ValidatePorts: strconv.ParseUint(port, 10, 32) and at most 65535
        if not _DIGITS_RE.fullmatch(value) or len(value) > 10 or int(value) > 65535:
            rep.error(
                path,
                f"{value!r} is not a port number",
                'write the port as a quoted number from 0 to 65535, e.g. "8080"',
            )
    elif check == "service_account":
        _check_service_account(value, path, rep)
    elif check in ("trust_domain", "wildcard"):
        _check_wildcard(value, path, rep, trust_domain=check == "trust_domain")
    elif check == "principal":
        if value.startswith(_SPIFFE):
            # inmesh hint: Istio prepends spiffe:// itself.
            rep.warn(
                path,
                f"{value!r} never matches: Istio adds spiffe:// to principals itself, so "
                "this compares against spiffe://spiffe://...",
                f"write {value[len(_SPIFFE) :]!r}",
            )
        else:
            _warn_literal_star(value, path, rep)
    elif check == "path":
        _check_path(value, path, rep)
    elif check == "method":
        if _warn_literal_star(value, path, rep):
            return
        if value != value.upper():
            # inmesh hint: methods are compared case-sensitively.
            rep.warn(
                path,
                f"method {value!r} is not upper case; methods are compared case-sensitively, "
                "so it never matches",
                f"write {value.upper()!r}",
            )
    elif check in ("host", "header", "string", "jwt"):
        _warn_literal_star(value, path, rep)
    elif check == "namespace" and not re.fullmatch(r"[a-z0-9*-]+", value):
        # inmesh hint: namespaces are DNS labels ('*' is a glob here).
        rep.warn(
            path,
            f"namespace {value!r} never matches: namespace names are lower-case letters, "
            "digits and '-'",
            "write the namespace name as Kubernetes spells it",
        )


def _check_service_account(value: str, path: Path, rep: Reporter) -> None:
    """``CheckServiceAccount`` on one value."""
    fix = "write namespace/serviceaccount, or serviceaccount for the policy's own namespace"
    if "*" in value:
        rep.error(
            path,
            f"wildcard in service account {value!r}: service accounts match exactly",
            "list the accounts; to match a whole namespace, use namespaces instead",
        )
    elif value.count("/") > 1:
        rep.error(path, f"{value!r} has more than one '/'", fix)
    elif len(value) > _MAX_SERVICE_ACCOUNT_LEN:
        rep.error(
            path,
            f"service account is {len(value)} characters long; Istio allows at most "
            f"{_MAX_SERVICE_ACCOUNT_LEN}",
            fix,
        )
    elif "/" in value:
        namespace, _, account = value.partition("/")
        if not namespace or not account:
            missing = "namespace" if not namespace else "service account"
            rep.error(path, f"{value!r} has an empty {missing}", fix)


def _check_wildcard(value: str, path: Path, rep: Reporter, *, trust_domain: bool) -> None:
    """``CheckWildcardValues`` (and ``CheckTrustDomainValues``) on one value."""
    stars = value.count("*")
    if stars > 1:
        rep.error(path, f"{value!r} has more than one '*'", _PATTERN_FIX)
    elif stars == 1 and value != "*" and not (value.startswith("*") or value.endswith("*")):
        rep.error(path, f"'*' is only allowed at the start or the end, got {value!r}", _PATTERN_FIX)
    elif trust_domain and "/" in value:
        rep.error(
            path,
            f"trust domain {value!r} contains '/'",
            "write only the trust domain, e.g. cluster.local; to match identities, use principals",
        )


def _check_path(value: str, path: Path, rep: Reporter) -> None:
    """``CheckValidPathTemplate`` on one path, plus inmesh hints."""
    template = _ONE_SEGMENT in value or _ANY_SEGMENTS in value
    seen_any = False
    for segment in value.strip("/").split("/"):
        if segment in (_ONE_SEGMENT, _ANY_SEGMENTS):
            if seen_any:
                rep.error(
                    path,
                    f"path template {value!r} has an operator after {{**}}",
                    "{**} matches the rest of the path, so it must be the last operator",
                )
                return
            seen_any = segment == _ANY_SEGMENTS
            continue
        if "{" in segment or "}" in segment:
            rep.error(
                path,
                f"path {value!r} has '{{' or '}}' outside a {{*}} or {{**}} operator",
                "a segment with an operator holds nothing else, as in /api/{*}/items; "
                "the only operators are {*} (one segment) and {**} (the rest)",
            )
            return
        if template and not _PATH_LITERAL_RE.fullmatch(segment):
            rep.error(
                path,
                f"path template {value!r} has an invalid segment {segment!r}",
                "with {*} or {**} in a path, other segments are plain non-empty text: no '*' "
                "(use {*} for a segment), no '//', no '?'",
            )
            return
    if template:
        return
    if _warn_literal_star(value, path, rep, is_path=True):
        return
    if not value.startswith(("/", "*")):
        # inmesh hint: request paths always start with '/'.
        rep.warn(
            path,
            f"path {value!r} does not start with '/', so it never matches",
            f"write '/{value}'",
        )
    elif "?" in value:
        # inmesh hint: the query is removed before paths are compared.
        rep.warn(
            path,
            f"path {value!r} contains '?', but the query string is removed before paths are "
            "compared, so it never matches",
            "match the path alone; match query parameters with a request.headers condition "
            "on a header instead",
        )


def _warn_literal_star(value: str, path: Path, rep: Reporter, *, is_path: bool = False) -> bool:
    """inmesh hint: Istio matches a '*' that is not first or last as a literal character."""
    if value == "*":
        return False
    core = value[1:] if value.startswith("*") else value[:-1] if value.endswith("*") else value
    if "*" not in core:
        return False
    rep.warn(
        path,
        f"{value!r}: a '*' is a wildcard only as the first or the last character; any other "
        "'*' is compared literally, so this value is unlikely to match",
        _PATTERN_FIX + ("; paths can use the templates {*} and {**}" if is_path else ""),
    )
    return True


# ---------------------------------------------------------------------------
# Helpers


def _written(rep: Reporter, path: Path) -> bool:
    """Whether the YAML had a key at ``path`` (from the reporter's line map).

    Only for hints about empty lists, which the model cannot tell from absent ones.
    """
    return rep.lines.get(path) is not None


def _warn_once(rep: Reporter, path: Path, message: str, fix: str) -> None:
    """Warn unless something (e.g. the parser's "not enforced yet") already did at ``path``."""
    shown = format_path(path)
    if any(d.path == shown for d in rep.diagnostics):
        return
    rep.warn(path, message, fix)
