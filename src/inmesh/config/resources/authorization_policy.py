"""AuthorizationPolicy (``security.istio.io``).

Mirrors istio/api ``security/v1beta1/authorization_policy.proto``. Data only;
the checks are in ``inmesh.config.validation.authorization_policy``.

Every string in a rule is a pattern: exact ``abc``, prefix ``abc*``, suffix
``*abc`` or presence ``*`` (non-empty). Lists are ORed, the fields of one
``Source`` or ``Operation`` are ANDed, and ``notX`` matches when none of its
values do. As in Istio, an empty list and an absent one are the same thing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from .._schema import Support, spec_field
from ._common import MatchLabelsSelector
from ._security_types import PolicyTargetReference

__all__ = [
    "Action",
    "AuthorizationPolicySpec",
    "Condition",
    "ExtensionProvider",
    "Operation",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Source",
]

ENFORCED = (
    "enforced by the inbound middleware (ASGI/WSGI) on the normalized path; "
    "see docs/authorization.md"
)
JWT_NOTE = (
    "needs RequestAuthentication (JWT), which inmesh does not read yet: "
    "treated as a missing attribute"
)


def _validator_warns(_value: object) -> bool:
    return True


GATEWAYS_ONLY = "applies to gateways and waypoints, not to sidecars"
_MTLS = "needs mutual TLS (the peer certificate); never matches a plaintext caller"
_NOT_MTLS = "needs mutual TLS (the peer certificate); always matches a plaintext caller"


class Action(str, enum.Enum):
    """``AuthorizationPolicy.Action``: what a matching rule does."""

    ALLOW = "ALLOW"
    """Allow a request only if some ALLOW policy matches it (the default)."""
    DENY = "DENY"
    """Deny a request that matches; evaluated before ALLOW."""
    AUDIT = "AUDIT"
    """Mark a matching request for audit logging; never changes the decision."""
    CUSTOM = "CUSTOM"
    """Delegate the decision to the extension named by ``provider``; evaluated first."""
    __numbers__: ClassVar[dict[int, str]]


Action.__numbers__ = {0: "ALLOW", 1: "DENY", 2: "AUDIT", 3: "CUSTOM"}


@dataclass(frozen=True, slots=True)
class ExtensionProvider:
    """``AuthorizationPolicy.ExtensionProvider{name}``: the CUSTOM authorizer."""

    __istio_name__: ClassVar[str] = "ExtensionProvider"
    name: str | None = spec_field(note="the name of the authorizer the CUSTOM action asks")


@dataclass(frozen=True, slots=True)
class Source:
    """``Source``: who sent the request. The fields that are set are ANDed."""

    __istio_name__: ClassVar[str] = "Source"
    principals: tuple[str, ...] = spec_field(
        default=(),
        note="peer identities without spiffe://, e.g. cluster.local/ns/default/sa/frontend; "
        + _MTLS,
    )
    not_principals: tuple[str, ...] = spec_field(default=(), note=_NOT_MTLS)
    # The parser's generic "not enforced yet" is left to the validator, which
    # says precisely what these values do without a JWT (never/always match).
    request_principals: tuple[str, ...] = spec_field(
        default=(), support=Support.NOT_YET, note=JWT_NOTE, enforced_if=_validator_warns
    )
    not_request_principals: tuple[str, ...] = spec_field(
        default=(), support=Support.NOT_YET, note=JWT_NOTE, enforced_if=_validator_warns
    )
    namespaces: tuple[str, ...] = spec_field(
        default=(), note="the namespace in the peer identity; " + _MTLS
    )
    not_namespaces: tuple[str, ...] = spec_field(default=(), note=_NOT_MTLS)
    service_accounts: tuple[str, ...] = spec_field(
        default=(),
        note="namespace/account, or account in the policy's namespace; no wildcards; "
        "at most 16; not with principals or namespaces; " + _MTLS,
    )
    not_service_accounts: tuple[str, ...] = spec_field(default=(), note=_NOT_MTLS)
    ip_blocks: tuple[str, ...] = spec_field(
        default=(), note="IPs or CIDR blocks of the direct peer (source.ip)"
    )
    not_ip_blocks: tuple[str, ...] = spec_field(default=())
    remote_ip_blocks: tuple[str, ...] = spec_field(
        default=(), note="IPs or CIDR blocks of the original client (remote.ip)"
    )
    not_remote_ip_blocks: tuple[str, ...] = spec_field(default=())
    trust_domains: tuple[str, ...] = spec_field(
        default=(), note="the trust domain of the peer identity; " + _MTLS
    )
    not_trust_domains: tuple[str, ...] = spec_field(default=(), note=_NOT_MTLS)


@dataclass(frozen=True, slots=True)
class Operation:
    """``Operation``: what the request asks for. The fields that are set are ANDed."""

    __istio_name__: ClassVar[str] = "Operation"
    hosts: tuple[str, ...] = spec_field(
        default=(), note="the Host / :authority header, case-insensitive"
    )
    not_hosts: tuple[str, ...] = spec_field(default=())
    ports: tuple[str, ...] = spec_field(
        default=(), note='destination ports as strings, e.g. "8080"'
    )
    not_ports: tuple[str, ...] = spec_field(default=())
    methods: tuple[str, ...] = spec_field(
        default=(), note="HTTP methods, case-sensitive; gRPC is always POST"
    )
    not_methods: tuple[str, ...] = spec_field(default=())
    paths: tuple[str, ...] = spec_field(
        default=(),
        note="the normalized path without the query; {*} is one segment, {**} any number",
    )
    not_paths: tuple[str, ...] = spec_field(default=())


@dataclass(frozen=True, slots=True)
class Condition:
    """``Condition{key, values, notValues}``: one more attribute the request must have."""

    __istio_name__: ClassVar[str] = "Condition"
    key: str | None = spec_field(
        required=True,
        note="an Istio attribute, e.g. request.headers[x-user], source.ip, destination.port; "
        "request.auth.* needs JWT, which inmesh does not read yet",
    )
    values: tuple[str, ...] = spec_field(default=(), note="at least one of values and notValues")
    not_values: tuple[str, ...] = spec_field(default=())


@dataclass(frozen=True, slots=True)
class RuleFrom:
    """``Rule.From{source}``."""

    __istio_name__: ClassVar[str] = "Rule.From"
    source: Source | None = spec_field()


@dataclass(frozen=True, slots=True)
class RuleTo:
    """``Rule.To{operation}``."""

    __istio_name__: ClassVar[str] = "Rule.To"
    operation: Operation | None = spec_field()


@dataclass(frozen=True, slots=True)
class Rule:
    """``Rule``: (any ``from``) AND (any ``to``) AND (every ``when``); ``{}`` matches all."""

    __istio_name__: ClassVar[str] = "Rule"
    from_: tuple[RuleFrom, ...] = spec_field(default=(), note="unset: any source")
    to: tuple[RuleTo, ...] = spec_field(default=(), note="unset: any operation")
    when: tuple[Condition, ...] = spec_field(default=(), note="unset: no further condition")


@dataclass(frozen=True, slots=True)
class AuthorizationPolicySpec:
    """Who may call the selected workloads, with what.

    CUSTOM policies are evaluated first, then DENY, then ALLOW; AUDIT never
    changes the decision. An ALLOW policy without rules matches nothing, so
    the workloads it selects deny whatever no other ALLOW policy allows.
    """

    __istio_name__: ClassVar[str] = "AuthorizationPolicy"
    selector: MatchLabelsSelector | None = spec_field(
        note="workloads in the policy's namespace; unset: all of them "
        "(the whole mesh in the root namespace)"
    )
    target_ref: PolicyTargetReference | None = spec_field(
        support=Support.IGNORED, note=GATEWAYS_ONLY
    )
    target_refs: tuple[PolicyTargetReference, ...] = spec_field(
        default=(), support=Support.IGNORED, note=GATEWAYS_ONLY
    )
    rules: tuple[Rule, ...] = spec_field(default=(), note=ENFORCED)
    action: Action = spec_field(
        default=Action.ALLOW,
        istio_default=Action.ALLOW,
        note=ENFORCED,
    )
    provider: ExtensionProvider | None = spec_field(
        support=Support.PARTIAL,
        note="the CUSTOM action needs a Python authorizer hook; provider.name names it",
    )
