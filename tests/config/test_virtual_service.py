"""VirtualService: what Istio accepts, refuses and warns about.

Rules come from istio/istio ``pkg/config/validation/virtualservice.go``
(``validateHTTPRoute`` and friends), ``pkg/config/validation/validation.go``
(``ValidateVirtualService``, ``validateGatewayNames``, ``validateDestination``,
``validateHTTPRedirect``, ``validateCORSPolicy``, ...),
``pkg/config/validation/agent/validation.go`` (``ValidateHTTPRetry``,
``ValidateDuration``, ``ValidateWildcardDomain``) and the CRD schema generated
from istio/api ``networking/v1alpha3/virtual_service.proto`` ("(CRD)" below:
the Kubernetes API server refuses these before Istio's webhook sees them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inmesh.config._schema import Support, fields_of, where_else
from inmesh.config.dump import resource_to_data
from inmesh.config.load import load_paths, load_text
from inmesh.config.resources._common import Duration, Percent, StringMatch
from inmesh.config.resources.virtual_service import (
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRetry,
    HTTPRoute,
    RedirectPortSelection,
    UnmatchedPreflights,
    VirtualServiceSpec,
)

from .helpers import assert_invalid, assert_valid, load_spec

VS = "VirtualService"
ROUTE = "route: [{destination: {host: reviews}}]"
SEED = Path("/work/shared/seeds/configs/04-invalid-loadbalancer-in-virtualservice.yaml")
CORPUS = Path(__file__).resolve().parent / "corpus"


def H(*rules: str, hosts: str = "[reviews]", extra: str = "") -> str:
    """A spec with ``hosts`` and the given HTTP rules (flow-style YAML mappings)."""
    head = f"hosts: {hosts}\n" if hosts else ""
    return head + extra + "http:\n" + "".join(f"- {r}\n" for r in rules)


def R(body: str) -> str:
    """One HTTP rule routing to reviews, plus ``body`` (flow-style mapping entries)."""
    return "{" + ROUTE + ", " + body + "}"


def M(match: str, body: str = ROUTE) -> str:
    """One HTTP rule with a single match."""
    return "{match: [" + match + "], " + body + "}"


P = "spec.http[0]"

# ---------------------------------------------------------------------------
# Refused: (spec, field path of an error)

INVALID: list[Any] = [
    # -- hosts (ValidateVirtualService, agent.ValidateWildcardDomain)
    pytest.param(H(R("name: a"), hosts="['*']"), "spec.hosts[0]", id="host-bare-wildcard-mesh"),
    pytest.param(
        H(R("name: a"), hosts="['*']", extra="gateways: [mesh, istio-system/ingress]\n"),
        "spec.hosts[0]",
        id="host-bare-wildcard-mesh-and-gateway",
    ),
    pytest.param(H(R("name: a"), hosts="[foo.ba!r]"), "spec.hosts[0]", id="host-bad-char"),
    # ValidateDNS1123Labels: the top-level domain cannot be all digits
    pytest.param(H(R("name: a"), hosts="[foo.123]"), "spec.hosts[0]", id="host-numeric-tld"),
    pytest.param(
        H(R("name: a"), hosts="['api.*.example.com']"), "spec.hosts[0]", id="host-mid-wildcard"
    ),
    pytest.param(H(R("name: a"), hosts="[a..b]"), "spec.hosts[0]", id="host-empty-label"),
    # duplicates include overlapping wildcards (host.Name.Matches)
    pytest.param(
        H(R("name: a"), hosts="['*.foo.bar', '*.bar']"), "spec.hosts[1]", id="hosts-overlap"
    ),
    pytest.param(
        H(R("name: a"), hosts="[reviews, reviews]"), "spec.hosts[1]", id="hosts-duplicate"
    ),
    pytest.param(
        H(R("name: a"), hosts="[a.example.com, '*.example.com']"),
        "spec.hosts[1]",
        id="hosts-wildcard-covers-host",
    ),
    pytest.param("hosts: [reviews]", "spec", id="no-routes"),
    # -- gateways (validateGatewayNames)
    pytest.param(
        H(R("name: a"), extra="gateways: [b@dgateway]\n"), "spec.gateways[0]", id="gateway-bad-name"
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: ['ns1/*']\n"), "spec.gateways[0]", id="gateway-ns-star"
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: ['*/gw']\n"), "spec.gateways[0]", id="gateway-star-ns"
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: [/gw]\n"), "spec.gateways[0]", id="gateway-empty-ns"
    ),
    # a delegate VirtualService (no hosts) cannot have gateways, tls or tcp
    pytest.param(
        H(R("name: a"), hosts="", extra="gateways: [mesh]\n"),
        "spec.gateways",
        id="delegate-vs-gateways",
    ),
    pytest.param("tcp: [{route: [{destination: {host: db}}]}]", "spec.tcp", id="delegate-vs-tcp"),
    # -- exportTo (validateExportTo; '~' is for ServiceEntries only)
    pytest.param(H(R("name: a"), extra="exportTo: ['~']\n"), "spec.exportTo[0]", id="export-none"),
    pytest.param(
        H(R("name: a"), extra="exportTo: [., default]\n"),
        "spec.exportTo[1]",
        id="export-dot-and-own-ns",
    ),
    pytest.param(
        H(R("name: a"), extra="exportTo: ['*', other]\n"),
        "spec.exportTo",
        id="export-star-and-more",
    ),
    pytest.param(
        H(R("name: a"), extra="exportTo: [Not_A_Namespace]\n"),
        "spec.exportTo[0]",
        id="export-bad-name",
    ),
    # -- one action per rule (validateHTTPRouteConflict)
    pytest.param(H("{name: nothing}"), P, id="rule-without-action"),
    pytest.param(H(R("redirect: {uri: /x}")), f"{P}.route", id="route-and-redirect"),
    pytest.param(
        H("{redirect: {uri: /x}, fault: {abort: {httpStatus: 500}}}"),
        f"{P}.fault",
        id="redirect-and-fault",
    ),
    pytest.param(
        H("{redirect: {uri: /x}, rewrite: {uri: /y}}"), f"{P}.rewrite", id="redirect-and-rewrite"
    ),
    pytest.param(
        H("{redirect: {uri: /x}, directResponse: {status: 200}}"),
        f"{P}.directResponse",
        id="redirect-and-direct-response",
    ),
    pytest.param(
        H(R("directResponse: {status: 200}")), f"{P}.route", id="direct-response-and-route"
    ),
    pytest.param(
        H("{directResponse: {status: 200}, fault: {delay: {fixedDelay: 1s}}}"),
        f"{P}.fault",
        id="direct-response-and-fault",
    ),
    pytest.param(
        H("{directResponse: {status: 200}, rewrite: {uri: /y}}"),
        f"{P}.rewrite",
        id="direct-response-and-rewrite",
    ),
    pytest.param(
        H(R("delegate: {name: r2, namespace: ns}")), f"{P}.route", id="root-delegate-and-route"
    ),
    pytest.param(
        H("{delegate: {name: r2}, redirect: {uri: /x}}"),
        f"{P}.redirect",
        id="root-delegate-and-redirect",
    ),
    # only one level of delegation
    pytest.param(
        H(R("delegate: {name: r3}"), hosts=""), f"{P}.delegate", id="delegate-in-delegate-vs"
    ),
    pytest.param(
        H(R("mirror: {host: shadow}, mirrors: [{destination: {host: shadow2}}]")),
        f"{P}.mirrors",
        id="mirror-and-mirrors",
    ),
    # -- destinations and weights (validateHTTPRouteDestinations, validateDestination)
    pytest.param(
        H("{route: [{destination: {host: a}, weight: -1}]}"),
        f"{P}.route[0].weight",
        id="weight-negative",
    ),
    pytest.param(
        H("{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}}]}"),
        f"{P}.route",
        id="total-weight-zero",
    ),
    pytest.param(
        H("{route: [{destination: {host: a}, weight: 2147483648}]}"),
        f"{P}.route[0].weight",
        id="weight-over-int32",
    ),
    pytest.param(
        H("{route: [{weight: 100}]}"), f"{P}.route[0].destination", id="destination-missing-crd"
    ),
    pytest.param(
        H("{route: [{destination: {subset: v1}}]}"),
        f"{P}.route[0].destination.host",
        id="destination-host-missing-crd",
    ),
    pytest.param(
        H("{route: [{destination: {host: ''}}]}"),
        f"{P}.route[0].destination.host",
        id="destination-host-empty",
    ),
    pytest.param(
        H("{route: [{destination: {host: '*'}}]}"),
        f"{P}.route[0].destination.host",
        id="destination-host-star",
    ),
    pytest.param(
        H("{route: [{destination: {host: 10.0.0.1}}]}"),
        f"{P}.route[0].destination.host",
        id="destination-host-ip",
    ),
    pytest.param(
        H("{route: [{destination: {host: a, subset: v_1}}]}"),
        f"{P}.route[0].destination.subset",
        id="subset-not-dns-label",
    ),
    pytest.param(
        H("{route: [{destination: {host: a, port: {}}}]}"),
        f"{P}.route[0].destination.port",
        id="destination-port-zero",
    ),
    pytest.param(
        H("{route: [{destination: {host: a, port: {number: 70000}}}]}"),
        f"{P}.route[0].destination.port",
        id="destination-port-too-big",
    ),
    pytest.param(H(R("mirror: {host: 'bad host'}")), f"{P}.mirror.host", id="mirror-host-invalid"),
    # -- durations (agent.ValidateDuration: >= 1ms, ms precision)
    pytest.param(H(R("timeout: 0s")), f"{P}.timeout", id="timeout-zero"),
    pytest.param(H(R("timeout: 1500us")), f"{P}.timeout", id="timeout-sub-ms-precision"),
    pytest.param(H(R("timeout: '10'")), f"{P}.timeout", id="timeout-no-unit"),
    pytest.param(H(R("timeout: -1s")), f"{P}.timeout", id="timeout-negative"),
    # -- retries (agent.ValidateHTTPRetry)
    pytest.param(H(R("retries: {attempts: -1}")), f"{P}.retries.attempts", id="retries-negative"),
    pytest.param(
        H(R("retries: {attempts: 0, perTryTimeout: 1s}")),
        f"{P}.retries.attempts",
        id="retries-zero-with-per-try-timeout",
    ),
    pytest.param(
        H(R("retries: {retryOn: 5xx}")), f"{P}.retries.attempts", id="retries-unset-with-retry-on"
    ),
    pytest.param(
        H(R("retries: {attempts: 0, retryRemoteLocalities: false}")),
        f"{P}.retries.attempts",
        id="retries-zero-with-remote-localities",
    ),
    pytest.param(
        H(R("retries: {attempts: 3, perTryTimeout: 500us}")),
        f"{P}.retries.perTryTimeout",
        id="per-try-timeout-too-short",
    ),
    pytest.param(
        H(R("retries: {attempts: 3, retryOn: '5xx,bogus'}")),
        f"{P}.retries.retryOn",
        id="retry-on-unknown",
    ),
    # tokens are split on ',' and not trimmed
    pytest.param(
        H(R("retries: {attempts: 3, retryOn: '5xx, reset'}")),
        f"{P}.retries.retryOn",
        id="retry-on-space",
    ),
    # integers must be codes Go's net/http knows (306 is unused, 599 unknown)
    pytest.param(
        H(R("retries: {attempts: 3, retryOn: '306'}")),
        f"{P}.retries.retryOn",
        id="retry-on-code-306",
    ),
    pytest.param(
        H(R("retries: {attempts: 3, retryOn: '599'}")),
        f"{P}.retries.retryOn",
        id="retry-on-code-599",
    ),
    pytest.param(
        H(R("retries: {attempts: 3, retryOn: '5xx,'}")),
        f"{P}.retries.retryOn",
        id="retry-on-empty-token",
    ),
    pytest.param(
        H(R("retries: {attempts: 3, backoff: 100us}")),
        f"{P}.retries.backoff",
        id="backoff-too-short",
    ),
    # -- fault injection (validateHTTPFaultInjection)
    pytest.param(H(R("fault: {}")), f"{P}.fault", id="fault-empty"),
    pytest.param(
        H(R("fault: {abort: {httpStatus: 503, percentage: {value: 101}}}")),
        f"{P}.fault.abort.percentage.value",
        id="abort-percentage-over-100",
    ),
    # validatePercentage: 0, or 0.0001 - 100
    pytest.param(
        H(R("fault: {abort: {httpStatus: 503, percentage: {value: 0.00001}}}")),
        f"{P}.fault.abort.percentage.value",
        id="abort-percentage-too-fine",
    ),
    pytest.param(
        H(R("fault: {delay: {fixedDelay: 1s, percentage: {value: -5}}}")),
        f"{P}.fault.delay.percentage.value",
        id="delay-percentage-negative",
    ),
    pytest.param(
        H(R("fault: {abort: {httpStatus: 700, percentage: {value: 1}}}")),
        f"{P}.fault.abort.httpStatus",
        id="abort-status-too-big",
    ),
    pytest.param(
        H(R("fault: {abort: {httpStatus: 199, percentage: {value: 1}}}")),
        f"{P}.fault.abort.httpStatus",
        id="abort-status-too-small",
    ),
    pytest.param(
        H(R("fault: {abort: {grpcStatus: unavailable, percentage: {value: 1}}}")),
        f"{P}.fault.abort.grpcStatus",
        id="abort-grpc-status-lower-case",
    ),
    pytest.param(
        H(R("fault: {abort: {http2Error: REFUSED_STREAM}}")),
        f"{P}.fault.abort.http2Error",
        id="abort-http2-error",
    ),
    pytest.param(
        H(R("fault: {abort: {httpStatus: 500, grpcStatus: INTERNAL}}")),
        f"{P}.fault.abort",
        id="abort-two-error-types",
    ),
    pytest.param(
        H(R("fault: {delay: {exponentialDelay: 1s}}")),
        f"{P}.fault.delay.exponentialDelay",
        id="delay-exponential",
    ),
    pytest.param(
        H(R("fault: {delay: {fixedDelay: 0s, percentage: {value: 1}}}")),
        f"{P}.fault.delay.fixedDelay",
        id="delay-zero",
    ),
    # -- mirroring
    pytest.param(
        H(R("mirror: {host: shadow}, mirrorPercentage: {value: 101}")),
        f"{P}.mirrorPercentage.value",
        id="mirror-percentage-over-100",
    ),
    pytest.param(
        H(R("mirror: {host: shadow}, mirrorPercentage: {value: -1}")),
        f"{P}.mirrorPercentage.value",
        id="mirror-percentage-negative",
    ),
    pytest.param(
        H(R("mirror: {host: shadow}, mirrorPercent: 150")),
        f"{P}.mirrorPercent",
        id="mirror-percent-over-100",
    ),
    pytest.param(
        H(R("mirrors: [{destination: {host: shadow}, percentage: {value: 200}}]")),
        f"{P}.mirrors[0].percentage.value",
        id="mirrors-percentage-over-100",
    ),
    pytest.param(
        H(R("mirrors: [{percentage: {value: 5}}]")),
        f"{P}.mirrors[0].destination",
        id="mirrors-destination-missing-crd",
    ),
    # protojson: the JSON name and the proto name are the same field
    pytest.param(
        H(R("mirror: {host: shadow}, mirrorPercent: 5, mirror_percent: 5")),
        f"{P}.mirror_percent",
        id="mirror-percent-both-spellings",
    ),
    # -- redirect (validateHTTPRedirect)
    pytest.param(H("{redirect: {}}"), f"{P}.redirect", id="redirect-empty"),
    pytest.param(H("{redirect: {redirectCode: 302}}"), f"{P}.redirect", id="redirect-only-code"),
    pytest.param(
        H("{redirect: {uri: /a, prefixRewrite: /b}}"), f"{P}.redirect", id="redirect-uri-and-prefix"
    ),
    pytest.param(
        H(M("{uri: {exact: /old}}", "redirect: {prefixRewrite: /new}")),
        f"{P}.match[0].uri",
        id="prefix-rewrite-needs-prefix-match",
    ),
    pytest.param(
        H("{redirect: {uri: /a, redirectCode: 200}}"),
        f"{P}.redirect.redirectCode",
        id="redirect-code-2xx",
    ),
    pytest.param(H("{redirect: {scheme: ftp}}"), f"{P}.redirect.scheme", id="redirect-scheme-ftp"),
    pytest.param(H("{redirect: {port: 70000}}"), f"{P}.redirect.port", id="redirect-port-too-big"),
    pytest.param(
        H("{redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}}"),
        f"{P}.redirect",
        id="redirect-port-and-derive-port",
    ),
    pytest.param(
        H("{redirect: {derivePort: FROM_CLIENT}}"),
        f"{P}.redirect.derivePort",
        id="redirect-derive-port-bad",
    ),
    # -- direct response (validateHTTPDirectResponse)
    pytest.param(
        H("{directResponse: {status: 199}}"),
        f"{P}.directResponse.status",
        id="direct-status-too-small",
    ),
    pytest.param(
        H("{directResponse: {status: 601}}"),
        f"{P}.directResponse.status",
        id="direct-status-too-big",
    ),
    pytest.param(
        H("{directResponse: {body: {string: hi}}}"),
        f"{P}.directResponse.status",
        id="direct-status-missing-crd",
    ),
    pytest.param(
        H("{directResponse: {status: 200, body: {string: hi, bytes: aGk=}}}"),
        f"{P}.directResponse.body",
        id="direct-body-string-and-bytes",
    ),
    pytest.param(
        H("{directResponse: {status: 200, body: {bytes: '!!'}}}"),
        f"{P}.directResponse.body.bytes",
        id="direct-body-bad-base64",
    ),
    pytest.param(
        H("{directResponse: {status: 200, body: {string: " + "x" * (1024 * 1024 + 1) + "}}}"),
        f"{P}.directResponse.body",
        id="direct-body-over-1mb",
    ),
    # -- matches (validateHTTPRouteMatchRequest, validateStringMatch)
    pytest.param(
        H(M("{headers: {'x user': {exact: a}}}")), f"{P}.match[0].headers", id="header-name-space"
    ),
    pytest.param(
        H(M("{headers: {'': {exact: a}}}")), f"{P}.match[0].headers", id="header-name-empty"
    ),
    pytest.param(
        H(M("{headers: {x-user: {prefix: ''}}}")), f"{P}.match[0].headers", id="header-empty-prefix"
    ),
    # '*' means "present" only in withoutHeaders; in headers it is a bad regex
    pytest.param(
        H(M("{headers: {x-user: {regex: '*'}}}")), f"{P}.match[0].headers", id="header-regex-star"
    ),
    pytest.param(H(M("{headers: {x-user: null}}")), f"{P}.match[0].headers", id="header-null"),
    pytest.param(
        H(M("{withoutHeaders: {x-user: {regex: '?'}}}")),
        f"{P}.match[0].withoutHeaders",
        id="without-headers-bad-regex",
    ),
    pytest.param(H(M("{uri: {regex: ''}}")), f"{P}.match[0].uri.regex", id="uri-regex-empty"),
    pytest.param(
        H(M("{uri: {regex: '/api/(v1'}}")), f"{P}.match[0].uri.regex", id="uri-regex-unbalanced"
    ),
    # Envoy's RE2 has no look-around
    pytest.param(
        H(M("{uri: {regex: '/(?!admin).*'}}")), f"{P}.match[0].uri.regex", id="uri-regex-lookahead"
    ),
    pytest.param(
        H(M("{uri: {regex: '" + "a" * 1025 + "'}}")),
        f"{P}.match[0].uri.regex",
        id="uri-regex-too-long",
    ),
    pytest.param(
        H(M("{uri: {exact: /a, prefix: /b}}")), f"{P}.match[0].uri", id="uri-two-match-types"
    ),
    # the uri may have an empty prefix; scheme, method and authority may not
    pytest.param(
        H(M("{method: {prefix: ''}}")), f"{P}.match[0].method.prefix", id="method-empty-prefix"
    ),
    pytest.param(
        H(M("{scheme: {regex: ''}}")), f"{P}.match[0].scheme.regex", id="scheme-empty-regex"
    ),
    pytest.param(
        H(M("{authority: {prefix: ''}}")),
        f"{P}.match[0].authority.prefix",
        id="authority-empty-prefix",
    ),
    pytest.param(
        H(M("{queryParams: {id: {regex: ''}}}")),
        f"{P}.match[0].queryParams",
        id="query-empty-regex",
    ),
    pytest.param(H(M("{port: 70000}")), f"{P}.match[0].port", id="match-port-too-big"),
    pytest.param(
        H(M("{sourceLabels: {'-app': web}}")),
        f"{P}.match[0].sourceLabels",
        id="source-label-bad-key",
    ),
    pytest.param(
        H(M("{sourceLabels: {app: 'web app'}}")),
        f"{P}.match[0].sourceLabels",
        id="source-label-bad-value",
    ),
    pytest.param(
        H(M("{sourceNamespace: bad_ns}")),
        f"{P}.match[0].sourceNamespace",
        id="source-namespace-bad",
    ),
    pytest.param(H(M("{gateways: [a/b/c]}")), f"{P}.match[0].gateways[0]", id="match-gateway-bad"),
    # JWT claim routing only for gateways
    pytest.param(
        H(M("{headers: {'@request.auth.claims.group': {exact: admin}}}")),
        f"{P}.match[0].headers",
        id="jwt-claim-in-mesh",
    ),
    pytest.param(
        H(
            M("{withoutHeaders: {'@request.auth.claims[group]': {exact: admin}}}"),
            extra="gateways: [mesh]\n",
        ),
        f"{P}.match[0].withoutHeaders",
        id="jwt-claim-without-headers-in-mesh",
    ),
    # -- header operations (ValidateHTTPHeader*OperationName, ValidateHTTPHeaderValue)
    pytest.param(
        H(R("headers: {request: {set: {':path': /x}}}")),
        f"{P}.headers.request.set",
        id="set-pseudo-header",
    ),
    pytest.param(
        H(R("headers: {request: {remove: [host]}}")),
        f"{P}.headers.request.remove[0]",
        id="remove-host",
    ),
    pytest.param(
        H(R("headers: {response: {set: {host: x}}}")),
        f"{P}.headers.response.set.host",
        id="response-set-host",
    ),
    pytest.param(
        H(R("headers: {request: {set: {'': x}}}")), f"{P}.headers.request.set", id="set-empty-name"
    ),
    pytest.param(
        H(R("headers: {request: {add: {x-a: 'abc%123'}}}")),
        f"{P}.headers.request.add",
        id="add-unescaped-percent",
    ),
    pytest.param(
        H(R("headers: {response: {set: {x-a: '%REQ(x-b'}}}")),
        f"{P}.headers.response.set",
        id="set-unterminated-variable",
    ),
    pytest.param(
        H(R('headers: {request: {set: {x-a: "a\\x01b"}}}')),
        f"{P}.headers.request.set",
        id="set-control-character",
    ),
    pytest.param(
        H("{route: [{destination: {host: a}, headers: {response: {remove: [':status']}}}]}"),
        f"{P}.route[0].headers.response.remove[0]",
        id="destination-remove-pseudo-header",
    ),
    # validateAuthorityRewrite: one place only
    pytest.param(
        H(
            R(
                "rewrite: {authority: a.example.com}, headers: {request: {set: {host: b.example.com}}}"
            )
        ),
        f"{P}.headers.request.set.host",
        id="authority-twice",
    ),
    # -- rewrite (validateHTTPRewrite, validateURIRegexRewrite)
    pytest.param(H(R("rewrite: {}")), f"{P}.rewrite", id="rewrite-empty"),
    pytest.param(
        H(R("rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}")),
        f"{P}.rewrite",
        id="rewrite-uri-and-regex",
    ),
    pytest.param(
        H(R("rewrite: {uriRegexRewrite: {match: '^/v1/(.*)'}}")),
        f"{P}.rewrite.uriRegexRewrite",
        id="regex-rewrite-without-rewrite",
    ),
    pytest.param(
        H(R("rewrite: {uriRegexRewrite: {match: '(', rewrite: /x}}")),
        f"{P}.rewrite.uriRegexRewrite.match",
        id="regex-rewrite-bad-regex",
    ),
    # -- CORS (validateCORSPolicy)
    pytest.param(
        H(R("corsPolicy: {allowOrigins: [{}]}")),
        f"{P}.corsPolicy.allowOrigins[0]",
        id="cors-empty-origin",
    ),
    pytest.param(
        H(R("corsPolicy: {allowOrigins: [{exact: ''}]}")),
        f"{P}.corsPolicy.allowOrigins[0]",
        id="cors-blank-origin",
    ),
    pytest.param(
        H(R("corsPolicy: {allowOrigins: [{regex: '['}]}")),
        f"{P}.corsPolicy.allowOrigins[0].regex",
        id="cors-bad-origin-regex",
    ),
    pytest.param(
        H(R("corsPolicy: {allowMethods: [get]}")),
        f"{P}.corsPolicy.allowMethods[0]",
        id="cors-lower-case-method",
    ),
    pytest.param(
        H(R("corsPolicy: {allowHeaders: ['x header']}")),
        f"{P}.corsPolicy.allowHeaders[0]",
        id="cors-bad-header",
    ),
    pytest.param(
        H(R("corsPolicy: {exposeHeaders: ['']}")),
        f"{P}.corsPolicy.exposeHeaders[0]",
        id="cors-empty-expose-header",
    ),
    pytest.param(
        H(R("corsPolicy: {maxAge: 1500ms}")),
        f"{P}.corsPolicy.maxAge",
        id="cors-max-age-not-seconds",
    ),
    pytest.param(
        H(R("corsPolicy: {unmatchedPreflights: DROP}")),
        f"{P}.corsPolicy.unmatchedPreflights",
        id="cors-bad-enum",
    ),
    # -- TLS and TCP routes (validateTLSRoute, validateTCPRoute)
    pytest.param(
        "hosts: [a.example.com]\ntls: [{route: [{destination: {host: a.example.com}}]}]",
        "spec.tls[0].match",
        id="tls-match-missing-crd",
    ),
    pytest.param(
        "hosts: [a.example.com]\ntls: [{match: [], route: [{destination: {host: a.example.com}}]}]",
        "spec.tls[0].match",
        id="tls-match-empty",
    ),
    pytest.param(
        "hosts: [a.example.com]\ntls: [{match: [{port: 443}], route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts",
        id="tls-sni-missing-crd",
    ),
    pytest.param(
        "hosts: [a.example.com]\ntls: [{match: [{sniHosts: [b.example.com]}], "
        "route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts[0]",
        id="tls-sni-not-in-hosts",
    ),
    pytest.param(
        "hosts: ['*.example.com']\ntls: [{match: [{sniHosts: ['foo.*.com']}], "
        "route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts[0]",
        id="tls-sni-bad-wildcard",
    ),
    pytest.param(
        "hosts: [a.example.com]\ntls: [{match: [{sniHosts: [a.example.com]}]}]",
        "spec.tls[0].route",
        id="tls-route-missing",
    ),
    pytest.param(
        "hosts: [db]\ntcp: [{match: [{port: 5432}]}]", "spec.tcp[0].route", id="tcp-route-missing"
    ),
    pytest.param(
        "hosts: [db]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], "
        "route: [{destination: {host: db}}]}]",
        "spec.tcp[0].match[0].destinationSubnets[0]",
        id="tcp-bad-subnet",
    ),
    pytest.param(
        "hosts: [db]\ntcp: [{match: [{port: 99999}], route: [{destination: {host: db}}]}]",
        "spec.tcp[0].match[0].port",
        id="tcp-port-too-big",
    ),
    pytest.param(
        "hosts: [db]\ntcp: [{route: [{destination: {host: a}, weight: 0}, "
        "{destination: {host: b}, weight: 0}]}]",
        "spec.tcp[0].route",
        id="tcp-total-weight-zero",
    ),
    # -- fields that do not exist (or no longer exist) in an HTTPRoute
    pytest.param(
        H(R("loadBalancer: {simple: ROUND_ROBIN}")), f"{P}.loadBalancer", id="load-balancer-in-vs"
    ),
    pytest.param(H(R("timout: 1s")), f"{P}.timout", id="typo-timeout"),
    pytest.param(H(R("retries: {attempt: 3}")), f"{P}.retries.attempt", id="typo-attempts"),
    pytest.param(
        H(R("websocketUpgrade: true")), f"{P}.websocketUpgrade", id="removed-websocket-upgrade"
    ),
    pytest.param(
        H(R("appendHeaders: {x-a: b}")), f"{P}.appendHeaders", id="removed-append-headers"
    ),
    pytest.param("hosts: [reviews]\nhttp: {route: []}", "spec.http", id="http-not-a-list"),
]


@pytest.mark.parametrize(("spec", "path"), INVALID)
def test_refused(spec: str, path: str) -> None:
    assert_invalid(VS, spec, path)


def test_dry_run_annotation_is_refused() -> None:
    # validateMetadata / checkDryRunAnnotation: only AuthorizationPolicy may carry it
    assert_invalid(
        VS,
        H(R("name: a")),
        "metadata.annotations",
        metadata_extra='annotations: {"istio.io/dry-run": "true"}',
    )


# ---------------------------------------------------------------------------
# Accepted (spec, optional check of the parsed model)

VALID: list[Any] = [
    pytest.param(H(R("name: simple")), id="simple"),
    pytest.param(
        H(
            "{route: [{destination: {host: reviews, subset: v1}, weight: 90}, "
            "{destination: {host: reviews, subset: v2}, weight: 10}]}"
        ),
        id="canary-90-10",
    ),
    # weights are relative; the sum need not be 100
    pytest.param(
        H("{route: [{destination: {host: a}, weight: 30}, {destination: {host: b}, weight: 30}]}"),
        id="weights-sum-60",
    ),
    pytest.param(
        H("{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 100}]}"),
        id="weight-zero-and-positive",
    ),
    # a single destination gets all traffic whatever its weight
    pytest.param(
        H("{route: [{destination: {host: a}, weight: 0}]}"), id="single-destination-weight-zero"
    ),
    pytest.param(
        H(
            "{route: [{destination: {host: '*.example.com'}}]}",
            hosts="['*.example.com', api.other.org]",
        ),
        id="wildcards",
    ),
    pytest.param(H(R("name: a"), hosts="[reviews.default.svc.cluster.local.]"), id="absolute-host"),
    # an IP is accepted as a host (ValidateVirtualService falls back to IsValidIPAddress)
    pytest.param(H(R("name: a"), hosts="[10.0.0.1]"), id="ip-host"),
    # '*' is fine for a VirtualService bound only to gateways
    pytest.param(
        H(R("name: a"), hosts="['*']", extra="gateways: [istio-system/ingress]\n"),
        id="star-on-gateway",
    ),
    # JWT claim routing is fine on gateways
    pytest.param(
        H(
            M("{headers: {'@request.auth.claims.group': {exact: admin}}}"),
            extra="gateways: [istio-system/ingress]\n",
        ),
        id="jwt-claim-on-gateway",
    ),
    # a delegate VirtualService has no hosts
    pytest.param(H(M("{uri: {prefix: /reviews}}"), hosts=""), id="delegate-vs"),
    pytest.param(
        H(
            "{match: [{uri: {prefix: /r}}], delegate: {name: reviews-routes, namespace: ns}}",
            "{route: [{destination: {host: other}}]}",
        ),
        id="root-with-delegate",
    ),
    pytest.param(
        H(
            M(
                "{uri: {prefix: /old}}",
                "redirect: {prefixRewrite: /new, derivePort: FROM_REQUEST_PORT}",
            )
        ),
        id="redirect-prefix-rewrite",
    ),
    pytest.param(
        H("{redirect: {port: 8443, scheme: https, redirectCode: 308}}"), id="redirect-port-only"
    ),
    pytest.param(
        H("{redirect: {authority: b.example.com, derivePort: 1}}"), id="redirect-numeric-enum"
    ),
    pytest.param(
        H("{directResponse: {status: 503, body: {bytes: " + "aGVsbG8=" + "}}}"),
        id="direct-response-bytes",
    ),
    pytest.param(H(R("retries: {attempts: 0}")), id="retries-off"),
    pytest.param(
        H(
            R(
                "retries: {attempts: 3, perTryTimeout: 250ms, retryOn: "
                "'5xx,gateway-error,503,retriable-4xx,cancelled,reset-before-request', "
                "retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 50ms}"
            )
        ),
        id="retries-full",
    ),
    pytest.param(H(R("timeout: 1h30m")), id="timeout-go-syntax"),
    pytest.param(
        H(
            R(
                "fault: {delay: {fixedDelay: 5s, percentage: {value: 0.1}}, "
                "abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}"
            )
        ),
        id="fault-delay-and-grpc-abort",
    ),
    pytest.param(
        H(R("fault: {abort: {httpStatus: 503, percentage: {value: 0}}}")), id="fault-zero-percent"
    ),
    pytest.param(
        H(
            R(
                "mirrors: [{destination: {host: shadow}, percentage: {value: 0}}, "
                "{destination: {host: shadow2, subset: v2, port: {number: 8080}}}]"
            )
        ),
        id="mirrors",
    ),
    pytest.param(
        H(R("mirror: {host: shadow}, mirrorPercentage: {value: 100}")), id="mirror-percentage"
    ),
    pytest.param(H(R("mirror: {host: shadow}, mirrorPercent: 50")), id="mirror-percent-deprecated"),
    pytest.param(
        H(R("mirror: {host: shadow}, mirror_percent: 50")), id="mirror-percent-proto-name"
    ),
    pytest.param(
        H(
            R(
                "corsPolicy: {allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b'}, "
                "{regex: 'https://.*[.]c[.]example'}], allowOrigin: ['https://d.example'], "
                "allowMethods: [GET, POST, '*'], allowHeaders: ['*', x-token], exposeHeaders: [x-trace], "
                "maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}"
            )
        ),
        id="cors-full",
    ),
    pytest.param(H(M("{uri: {prefix: ''}}")), id="uri-empty-prefix"),
    pytest.param(
        H(
            M(
                "{withoutHeaders: {x-a: {regex: '*'}, x-b: {}}, queryParams: {debug: {}, id: {exact: ''}}}"
            )
        ),
        id="presence-matches",
    ),
    pytest.param(
        H(
            M(
                "{headers: {':authority': {exact: a}}, port: 8080, sourceLabels: {app: web, "
                "example.com/tier: front}, sourceNamespace: Front, gateways: [mesh], ignoreUriCase: true, "
                "statPrefix: r1, name: by-source}"
            )
        ),
        id="match-every-field",
    ),
    pytest.param(
        H(
            R(
                "headers: {request: {set: {host: b.example.com, x-a: '100%%'}, "
                "add: {x-node: '%HOSTNAME%', x-h: '%REQ(x-b)%', x-m: '%DYNAMIC_METADATA([\"a\", \"b\"])%'}, "
                "remove: [x-secret]}, response: {set: {x-c: d}, remove: [server]}}"
            )
        ),
        id="header-operations",
    ),
    pytest.param(
        H(R("headers: {request: {set: {':authority': b.example.com}}}")), id="authority-header"
    ),
    pytest.param(
        H(
            M(
                "{uri: {regex: '/legacy/[0-9]+'}}",
                ROUTE + ", rewrite: {uriRegexRewrite: "
                "{match: '/legacy/([0-9]+)', rewrite: '/v2/\\\\1'}}",
            )
        ),
        id="uri-regex-rewrite",
    ),
    pytest.param(
        "hosts: ['*.example.com']\ntls: [{match: [{sniHosts: [a.example.com], port: 443, "
        "destinationSubnets: [10.0.0.0/8, 10.1.2.3]}], route: [{destination: {host: a.example.com}}]}]",
        id="tls-route",
    ),
    pytest.param(
        "hosts: [db]\ntcp: [{match: [{port: 5432, sourceSubnet: 10.0.0.0/16}], "
        "route: [{destination: {host: db, port: {number: 5432}}}]}, "
        "{route: [{destination: {host: db2}}]}]",
        id="tcp-routes",
    ),
    pytest.param(H(R("name: a"), extra="exportTo: [., other-ns]\n"), id="export-to"),
    pytest.param(
        H(R("name: a"), extra="gateways: [mesh, istio-system/ingress]\n"), id="mesh-and-gateway"
    ),
    # validateGatewayNames stops at the first name without '/' (here 'mesh'),
    # so Istio does not look at the bad name after it
    pytest.param(
        H(R("name: a"), extra="gateways: [mesh, 'b@d/x']\n"), id="gateway-after-mesh-unchecked"
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: [gateway.istio-system]\n"), id="legacy-gateway-name"
    ),
    pytest.param(H(R("name: x"), hosts="", extra="exportTo: ['*']\n"), id="delegate-vs-exported"),
]


@pytest.mark.parametrize("spec", VALID)
def test_accepted(spec: str) -> None:
    assert_valid(VS, spec)


def test_enough_cases() -> None:
    assert len(INVALID) >= 55
    assert len(VALID) >= 20


# ---------------------------------------------------------------------------
# Warned (valid, but a warning names the field): (spec, path, text in message)

WARNINGS: list[Any] = [
    pytest.param(
        H(R("retries: {attempts: 1, retryRemoteLocalities: true}")),
        "spec.http[0].retries.retryRemoteLocalities",
        "not enforced yet",
        id="retry-remote-localities-not-yet",
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: [istio-system/ingress]\n"),
        "spec.gateways",
        "no effect",
        id="gateway-only",
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: [gw.istio-system]\n"),
        "spec.gateways[0]",
        "legacy",
        id="legacy-gateway-name",
    ),
    pytest.param(
        H(R("name: a"), extra="gateways: [mesh, 'b@d/x']\n"),
        "spec.gateways[1]",
        "not a DNS label",
        id="unchecked-gateway",
    ),
    pytest.param(
        H(R("fault: {abort: {percentage: {value: 5}}}")),
        f"{P}.fault.abort",
        "no error type",
        id="abort-without-error-type",
    ),
    pytest.param(
        H(R("fault: {abort: {httpStatus: 503}}")),
        f"{P}.fault.abort",
        "no request is aborted",
        id="abort-without-percentage",
    ),
    pytest.param(
        H(R("fault: {delay: {fixedDelay: 1s}}")),
        f"{P}.fault.delay",
        "no request is delayed",
        id="delay-without-percentage",
    ),
    pytest.param(
        H(R("fault: {delay: {percentage: {value: 5}}}")),
        f"{P}.fault.delay",
        "no effect",
        id="delay-without-fixed-delay",
    ),
    pytest.param(
        H(R("fault: {delay: {fixedDelay: 1s, percent: 5}}")),
        f"{P}.fault.delay.percent",
        "deprecated",
        id="delay-percent-deprecated",
    ),
    pytest.param(
        H(R("mirror: {host: s}, mirrorPercent: 5")),
        f"{P}.mirrorPercent",
        "deprecated",
        id="mirror-percent-deprecated",
    ),
    pytest.param(
        H(R("mirrorPercentage: {value: 5}")),
        f"{P}.mirrorPercentage",
        "without mirror",
        id="mirror-percentage-without-mirror",
    ),
    pytest.param(
        H(R("corsPolicy: {allowOrigin: ['https://a']}")),
        f"{P}.corsPolicy.allowOrigin",
        "deprecated",
        id="allow-origin-deprecated",
    ),
    pytest.param(
        H(R("retries: {perTryTimeout: 1s, attempts: 2}"), R("retries: {backoff: 1s}")),
        "spec.http[1].retries.attempts",
        "turns retries off",
        id="retries-without-attempts",
    ),
    pytest.param(
        H("{redirect: {uri: /x, redirectCode: 305}}"),
        f"{P}.redirect.redirectCode",
        "drops the route",
        id="redirect-code-not-applied",
    ),
    pytest.param(
        H("{directResponse: {status: 600}}"),
        f"{P}.directResponse.status",
        "Envoy refuses",
        id="status-600",
    ),
    pytest.param(
        H("{directResponse: {status: 200, body: {string: " + "x" * (101 * 1024) + "}}}"),
        f"{P}.directResponse.body",
        "large",
        id="direct-response-large",
    ),
    pytest.param(
        H(M("{headers: {X-User: {exact: a}}}")),
        f"{P}.match[0].headers['X-User']",
        "lower case",
        id="header-upper-case",
    ),
    pytest.param(H(M("{}")), f"{P}.match[0]", "empty match", id="empty-match"),
    pytest.param(H(M("{uri: {}}")), f"{P}.match[0].uri", "every request", id="empty-uri-match"),
    pytest.param(
        H(R("name: a"), hosts="[reviews, reviews.default.svc.cluster.local]"),
        "spec.hosts[0]",
        "also listed",
        id="short-and-long-host",
    ),
    pytest.param(
        "hosts: [a.example.com]\ntls: [{match: [{sniHosts: [1.1.1.1]}], route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts[0]",
        "IP address",
        id="sni-ip",
    ),
    pytest.param(
        "hosts: [db]\ntcp: [{route: [{destination: {host: a}}]}, {route: [{destination: {host: b}}]}]",
        "spec.tcp[1]",
        "never used",
        id="tcp-after-catch-all",
    ),
    # VirtualServiceUnreachableRule / IneffectiveMatch
    pytest.param(
        H(R("name: all"), R("name: never")), "spec.http[1]", "never used", id="rule-after-catch-all"
    ),
    pytest.param(
        H(M("{uri: {prefix: /}}"), M("{uri: {exact: /a}}")),
        "spec.http[1]",
        "never used",
        id="rule-after-prefix-slash",
    ),
    pytest.param(
        H(M("{uri: {prefix: /api}}"), M("{uri: {prefix: /api/v1}, method: {exact: GET}}")),
        "spec.http[1]",
        "never used",
        id="prefix-covers-longer-prefix",
    ),
    pytest.param(
        H(
            M("{uri: {exact: /a}}"),
            "{match: [{uri: {exact: /a}}, {uri: {exact: /b}}], " + ROUTE + "}",
        ),
        "spec.http[1].match[0]",
        "never used",
        id="duplicate-match",
    ),
    pytest.param(
        H(
            M("{headers: {x-v: {prefix: a}}}"),
            M("{headers: {x-v: {exact: abc}, x-w: {exact: '1'}}}"),
        ),
        "spec.http[1]",
        "never used",
        id="header-prefix-covers",
    ),
]


@pytest.mark.parametrize(("spec", "path", "text"), WARNINGS)
def test_warned(spec: str, path: str, text: str) -> None:
    result = assert_valid(VS, spec)
    hits = [w for w in result.warnings if w.path == path and text in w.message + w.fix]
    assert hits, f"no warning at {path} containing {text!r}: " + "; ".join(
        str(w) for w in result.warnings
    )


@pytest.mark.parametrize(
    "rules",
    [
        # different source workloads, regexes and methods do not shadow each other
        (M("{uri: {prefix: /a}, sourceLabels: {app: web}}"), M("{uri: {prefix: /a/b}}")),
        (M("{uri: {regex: '/a/.*'}}"), M("{uri: {regex: '/a/b.*'}}")),
        (
            M("{uri: {prefix: /a}, method: {exact: GET}}"),
            M("{uri: {prefix: /a/b}, method: {exact: POST}}"),
        ),
        (M("{uri: {prefix: /a}, headers: {x: {exact: '1'}}}"), M("{uri: {prefix: /a}}")),
        (
            M("{uri: {prefix: /a}, ignoreUriCase: true}", "redirect: {uri: /x}"),
            M("{uri: {prefix: /b}}"),
        ),
    ],
    ids=["source-labels", "regexes", "methods", "more-headers-first", "different-prefix"],
)
def test_distinct_rules_are_not_flagged(rules: tuple[str, ...]) -> None:
    result = assert_valid(VS, H(*rules))
    assert not [w for w in result.warnings if "never used" in w.message]


def test_routing_fields_have_no_support_warning() -> None:
    result = assert_valid(VS, H(R("name: a")))
    assert not result.warnings
    result = assert_valid(VS, H(R("timeout: 2s, retries: {attempts: 3, perTryTimeout: 500ms}")))
    assert not result.warnings


def test_nested_support_warnings() -> None:
    # match.gateways [mesh] is enforced; delegate is NOT_YET
    result = assert_valid(VS, H(M("{gateways: [mesh]}", "delegate: {name: r2}")))
    assert [w.path for w in result.warnings] == ["spec.http[0].delegate"]


def test_tls_routes_warn_that_they_are_not_applied() -> None:
    result = assert_valid(
        VS,
        "hosts: [a.example.com]\ntls: [{match: [{sniHosts: [a.example.com]}], "
        "route: [{destination: {host: a}}]}]",
    )
    (w,) = [w for w in result.warnings if w.path == "spec.tls"]
    assert "inmesh routes HTTP only" in w.fix


# ---------------------------------------------------------------------------
# Message text


def _errors(spec: str, **kw: Any) -> list[str]:
    return [str(e) for e in load_spec(VS, spec, **kw).errors]


def test_did_you_mean_for_a_misspelt_field() -> None:
    (err,) = _errors(H(R("retries: {attempt: 3}")))
    assert "spec.http[0].retries.attempt: unknown field 'attempt' in HTTPRetry" in err
    assert "did you mean 'attempts'?" in err


def test_did_you_mean_for_retry_on_and_grpc_status() -> None:
    (err,) = _errors(H(R("retries: {attempts: 2, retryOn: '5xx,conect-failure'}")))
    assert "'conect-failure' is not a valid retryOn condition" in err
    assert "did you mean 'connect-failure'?" in err
    (err,) = _errors(H(R("fault: {abort: {grpcStatus: UNAVAILBLE, percentage: {value: 1}}}")))
    assert "did you mean 'UNAVAILABLE'?" in err


def test_field_in_the_wrong_place_says_where_it_belongs() -> None:
    (err,) = _errors(H("{route: [{destination: {host: a}, timeout: 1s}]}"))
    assert "unknown field 'timeout' in HTTPRouteDestination" in err
    assert "it belongs in spec.http[].timeout" in err


def test_messages_name_file_line_resource_and_fix() -> None:
    spec = """
        hosts: [reviews]
        http:
        - route:
          - destination: {host: reviews}
          retries:
            attempts: 0
            retryOn: 5xx
        """
    (err,) = load_spec(VS, spec).errors
    assert err.file == "case.yaml" and err.line == 12
    assert err.path == "spec.http[0].retries.attempts"
    assert "attempts is 0, which turns retries off, but retryOn is set" in err.message
    assert err.fix == "set attempts to the number of retries, or remove retryOn"
    assert str(err).startswith(
        "case.yaml:12: VirtualService default/r: spec.http[0].retries.attempts: "
    )


def test_total_weight_zero_message() -> None:
    (err,) = _errors(H("{route: [{destination: {host: a}}, {destination: {host: b}}]}"))
    assert "total destination weight = 0" in err


def test_every_error_of_a_bad_rule_is_reported() -> None:
    errs = load_spec(VS, H(R("timeout: 0s, retries: {attempts: -1}, fault: {}"))).errors
    assert {e.path for e in errs} == {
        "spec.http[0].timeout",
        "spec.http[0].retries.attempts",
        "spec.http[0].fault",
    }


def test_seed_with_load_balancer_in_virtual_service() -> None:
    if not SEED.exists():
        pytest.skip("seed file not present")
    if not where_else("loadBalancer"):
        pytest.skip("the DestinationRule model is not there yet")
    result = load_paths([SEED])
    assert not result.resources
    (err,) = result.errors
    assert err.line == 18
    assert err.path == "spec.http[0].loadBalancer"
    assert "loadBalancer" in err.message
    assert "DestinationRule spec.trafficPolicy.loadBalancer" in err.fix


# ---------------------------------------------------------------------------
# The model


def test_rich_corpus_parses_into_typed_values() -> None:
    result = load_paths([CORPUS / "11-rich-virtualservice.yaml"])
    assert not result.errors
    spec = result.resources[0].spec
    assert isinstance(spec, VirtualServiceSpec)
    assert spec.hosts == ("reviews", "reviews.example.com") and spec.applies_to_mesh
    first = spec.http[0]
    assert isinstance(first, HTTPRoute) and first.name == "jason"
    match = first.match[0]
    assert isinstance(match, HTTPMatchRequest)
    assert match.headers["end-user"] == StringMatch(exact="jason")
    assert match.uri == StringMatch(prefix="/api/") and match.ignore_uri_case is True
    assert match.without_headers["x-skip"].is_empty
    assert dict(match.source_labels) == {"app": "frontend"}
    assert first.timeout == Duration(2.0)
    assert isinstance(first.retries, HTTPRetry)
    assert first.retries.retry_on_tokens == ("5xx", "reset", "503")
    assert first.retries.per_try_timeout is not None and first.retries.per_try_timeout.millis == 500
    assert first.fault is not None and first.fault.delay is not None
    assert first.fault.delay.fraction == pytest.approx(0.1)
    assert first.mirror_share == 0.25 and first.mirror is not None and first.mirror.subset == "v3"
    assert first.cors_policy is not None and first.cors_policy.max_age == Duration(86400.0)
    assert spec.http[2].redirect is not None and spec.http[2].redirect.redirect_code == 308
    direct = spec.http[3].direct_response
    assert direct is not None and direct.body is not None and direct.body.content == b"ok"
    assert [d.weight for d in spec.http[4].route] == [75, 25]


def test_enums_defaults_and_deprecated_fields() -> None:
    spec = (
        assert_valid(
            VS,
            H(
                "{redirect: {authority: a.example.com, derivePort: 1}}",
                R("mirror: {host: s}, mirror_percent: 30, corsPolicy: {unmatchedPreflights: 2}"),
            ),
        )
        .resources[0]
        .spec
    )
    assert spec.http[0].redirect.derive_port is RedirectPortSelection.FROM_REQUEST_PORT
    assert spec.http[1].mirror_percent_proto == 30 and spec.http[1].mirror_share == 0.3
    assert spec.http[1].cors_policy.unmatched_preflights is UnmatchedPreflights.IGNORE
    assert HTTPRoute().mirror_share == 1.0  # unset: every request is mirrored
    by_yaml = {f.yaml: f for f in fields_of(HTTPRoute)}
    assert by_yaml["mirrorPercent"].deprecated and by_yaml["mirror_percent"].deprecated
    (percentage,) = [f for f in fields_of(HTTPMirrorPolicy) if f.yaml == "percentage"]
    assert percentage.istio_default == Percent(100.0)


def test_support_metadata() -> None:
    top = {f.yaml: f for f in fields_of(VirtualServiceSpec)}
    assert top["http"].support is Support.SUPPORTED and "transport" in top["http"].note
    assert top["tls"].support is top["tcp"].support is Support.NOT_YET
    assert "TLS/TCP routes are accepted and validated but not applied" in top["tls"].note
    assert top["gateways"].support is Support.PARTIAL and "mesh" in top["gateways"].note
    assert top["hosts"].support is top["exportTo"].support is Support.SUPPORTED
    route = {f.yaml: f for f in fields_of(HTTPRoute)}
    assert route["delegate"].support is Support.NOT_YET
    assert all(
        route[name].support is Support.SUPPORTED
        for name in (
            "match",
            "route",
            "redirect",
            "directResponse",
            "rewrite",
            "fault",
            "mirror",
            "mirrors",
            "corsPolicy",
            "headers",
        )
    )
    assert route["timeout"].support is route["retries"].support is Support.SUPPORTED
    match = {f.yaml: f for f in fields_of(HTTPMatchRequest)}
    assert match["statPrefix"].support is Support.IGNORED
    for fs in (*top.values(), *route.values(), *match.values()):
        assert "#" not in fs.note  # user-facing sentences, no issue numbers


def test_dump_round_trip() -> None:
    (res,) = load_paths([CORPUS / "11-rich-virtualservice.yaml"]).resources
    again = load_text(yaml.safe_dump(resource_to_data(res, fill_defaults=False)))
    assert not again.errors and again.resources[0].spec == res.spec
    filled = resource_to_data(res, fill_defaults=True)["spec"]["http"][0]
    assert filled["retries"]["retryIgnorePreviousHosts"] is True
    assert filled["corsPolicy"]["unmatchedPreflights"] == "FORWARD"
    assert not load_text(yaml.safe_dump(resource_to_data(res))).errors
