"""ServiceEntry and WorkloadEntry checks, after Istio's own.

Two gates decide whether Istio takes one of these resources, and both are
reproduced here as errors:

- the validating webhook / ``istioctl validate``: istio/istio
  ``pkg/config/validation/validation.go`` (``ValidateServiceEntry``,
  ``ValidateWorkloadEntry``, ``validateWorkloadEntry``, ``validateExportTo``,
  ``ValidateAlphaWorkloadSelector``, ``ValidatePortName``,
  ``ValidateProtocol``, ``ValidateUnixAddress``), with the helpers of
  ``pkg/config/validation/agent/validation.go`` (``ValidateWildcardDomain``,
  ``ValidateFQDN``, ``ValidatePartialWildCard``, ``ValidateIPSubnet``,
  ``ValidatePort``) and ``pkg/config/labels/instance.go``;
- the CRD schema the Kubernetes API server applies first (list sizes, string
  lengths and CEL rules from the kubebuilder markers in istio/api
  ``networking/v1alpha3/service_entry.proto`` and ``workload_entry.proto``,
  generated into ``manifests/charts/base/files/crd-all.gen.yaml``). Comments
  say "(CRD)" where a rule exists only there.

Istio's warnings stay warnings. Hints that Istio does not give are warnings
too, and their comments say "inmesh hint".
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from .._schema import Reporter
from .._yaml import Path
from ..resources.service_entry import (
    Location,
    Protocol,
    Resolution,
    ServiceEntrySpec,
    ServicePort,
    WorkloadEntrySpec,
)
from ._common import (
    check_export_to,
    check_labels,
    check_selector_label,
    check_selector_size,
    fqdn_problem,
    ip_subnet_problem,
    is_ip,
    is_k8s_dns1123_subdomain,
    is_port_name,
    wildcard_domain_problem,
)

__all__ = ["validate_service_entry", "validate_workload_entry"]

# -- limits from the CRD schema ------------------------------------------------
_MAX_HOSTS = 256
_MAX_ADDRESSES = 256
_MAX_ADDRESS_LEN = 64
_MAX_PORTS = 256
_MAX_ENDPOINTS = 4096
_MAX_SELECTOR_LABELS = 256
_MAX_WE_ADDRESS_LEN = 256
_MAX_WE_PORTS = 128
_MAX_WE_PORT_NAME_LEN = 62  # CEL: size(key) < 63
_MAX_WE_LABELS = 256
_MAX_WE_NETWORK_LEN = 2048
_MAX_WE_LOCALITY_LEN = 2048
_MAX_WE_SERVICE_ACCOUNT_LEN = 253
_UINT32_MAX = 2**32 - 1

_UNIX_PREFIX = "unix://"
_AUTOALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip"
_USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
_DYNAMIC_DNS_PROTOCOLS = (Protocol.HTTP, Protocol.TLS, Protocol.GRPC, Protocol.HTTP2)

_Mode = Literal["entry", "static", "dns"]
"""How an endpoint address is judged: a WorkloadEntry of its own (IP, hostname or
socket), a STATIC endpoint (IP or socket) or a DNS endpoint (IP or hostname)."""


# ---------------------------------------------------------------------------
# ServiceEntry


def validate_service_entry(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidateServiceEntry`` plus the CRD rules, on a parsed ServiceEntry."""
    spec: ServiceEntrySpec = resource.spec
    namespace: str = resource.metadata.namespace
    labels: Mapping[str, str] = resource.metadata.labels

    bad_hosts = _check_hosts(spec, namespace, rep)
    _check_addresses(spec, rep)
    ports_by_name = _check_ports(spec, labels, rep)
    _check_selector(spec, rep)
    if len(spec.endpoints) > _MAX_ENDPOINTS:  # (CRD) maxItems
        rep.error(
            ("spec", "endpoints"),
            f"{len(spec.endpoints)} endpoints is more than the {_MAX_ENDPOINTS} Istio allows",
            "split the service, or select WorkloadEntries with workloadSelector",
        )

    res = spec.resolution
    if res is Resolution.NONE:
        _check_resolution_none(spec, rep)
    elif res is Resolution.STATIC:
        for i, endpoint in enumerate(spec.endpoints):
            _check_workload(
                endpoint, ("spec", "endpoints", i), rep, mode="static", ports=ports_by_name
            )
        if not spec.endpoints and spec.workload_selector is None:
            # inmesh hint: Istio accepts it (the entry may decorate a Kubernetes
            # Service of the same name), but outside Kubernetes nothing backs it.
            rep.warn(
                ("spec", "resolution"),
                "resolution STATIC with neither endpoints nor workloadSelector: the service "
                "has no endpoints, so calls to it get 503 (no healthy upstream)",
                "list the endpoints, or select WorkloadEntries with workloadSelector",
            )
    elif res in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        _check_resolution_dns(spec, bad_hosts, ports_by_name, rep)
    else:
        _check_resolution_dynamic_dns(spec, labels, rep)

    _check_multiple_hosts(spec, rep)
    check_export_to(spec.export_to, namespace, rep, kind="ServiceEntry", service_entry=True)
    for i, san in enumerate(spec.subject_alt_names):
        if not san.strip():  # inmesh hint: Istio passes it through to Envoy
            rep.warn(
                ("spec", "subjectAltNames", i),
                "empty subject alternative name: no certificate matches it",
                "remove it, or write the SAN the server certificate carries "
                "(e.g. spiffe://cluster.local/ns/<namespace>/sa/<account>)",
            )


def _check_hosts(spec: ServiceEntrySpec, namespace: str, rep: Reporter) -> set[int]:
    """Each host is a (wildcard) domain; returns the indices of the bad ones."""
    bad: set[int] = set()
    if not spec.hosts:
        rep.error(
            ("spec", "hosts"),
            "a ServiceEntry needs at least one host",
            "list the DNS names of the service, e.g. hosts: [api.example.com]",
        )
    if len(spec.hosts) > _MAX_HOSTS:  # (CRD) maxItems
        rep.error(
            ("spec", "hosts"),
            f"{len(spec.hosts)} hosts is more than the {_MAX_HOSTS} Istio allows",
            "split them over several ServiceEntries",
        )
    for i, host in enumerate(spec.hosts):
        path: Path = ("spec", "hosts", i)
        if host == "*":
            bad.add(i)
            rep.error(
                path,
                "a ServiceEntry host cannot be '*'",
                "name the hosts, or use a wildcard domain such as *.example.com",
            )
            continue
        problem = wildcard_domain_problem(host)
        if problem is not None:
            bad.add(i)
            rep.error(
                path,
                f"host {host!r} is not a valid domain name: {problem}",
                "use letters, digits, '-' and '.', optionally starting with '*.' "
                "(e.g. api.example.com or *.example.com)",
            )
            continue
        partial = "*" in host and not host.startswith("*.")
        if partial and spec.resolution is not Resolution.DYNAMIC_DNS:
            # Istio: ValidatePartialWildCard, wrapped as a warning.
            rep.warn(
                path,
                f"partial wildcard {host!r}: Istio only supports a wildcard as the whole "
                "first label",
                "write the wildcard as the whole first label (*.example.com matches every "
                "subdomain), or use resolution DYNAMIC_DNS",
            )
        if "." not in host and not host.startswith("*"):
            # inmesh hint: ServiceEntry hosts are kept literally, VirtualService
            # and DestinationRule short names are expanded with the namespace.
            fqdn = f"{host}.{namespace}.svc.cluster.local"
            rep.warn(
                path,
                f"host {host!r} is a short name: ServiceEntry hosts are taken literally, while "
                f"'host: {host}' in a VirtualService or DestinationRule means {fqdn}",
                f"write the FQDN {fqdn} so that VirtualServices and DestinationRules "
                f"naming {host!r} find this service",
            )
    return bad


def _check_addresses(spec: ServiceEntrySpec, rep: Reporter) -> None:
    if len(spec.addresses) > _MAX_ADDRESSES:  # (CRD) maxItems
        rep.error(
            ("spec", "addresses"),
            f"{len(spec.addresses)} addresses is more than the {_MAX_ADDRESSES} Istio allows",
            "use CIDR blocks to cover ranges",
        )
    cidr_ok = spec.resolution in (Resolution.NONE, Resolution.STATIC)
    for i, address in enumerate(spec.addresses):
        path: Path = ("spec", "addresses", i)
        if len(address) > _MAX_ADDRESS_LEN:  # (CRD) maxLength
            rep.error(
                path,
                f"address is {len(address)} characters long; Istio allows at most "
                f"{_MAX_ADDRESS_LEN}",
                "write an IP address or a CIDR block",
            )
            continue
        problem = ip_subnet_problem(address)
        if problem is not None:
            rep.error(
                path,
                f"{address!r} is not {problem}",
                "write an IP address (10.0.0.1, 2001:db8::1) or a CIDR block (10.0.0.0/24); "
                "hostnames belong in hosts, unix:// sockets in endpoints",
            )
        elif "/" in address and not cidr_ok:
            rep.error(
                path,
                f"CIDR block {address!r} with resolution {spec.resolution.value}: CIDR addresses "
                "are allowed only with resolution NONE or STATIC",
                "give single IP addresses, or use resolution NONE or STATIC",
            )


def _check_ports(
    spec: ServiceEntrySpec, labels: Mapping[str, str], rep: Reporter
) -> dict[str, ServicePort]:
    """Port numbers, names and protocols; returns the ports by name (first wins)."""
    if len(spec.ports) > _MAX_PORTS:  # (CRD) maxItems
        rep.error(
            ("spec", "ports"),
            f"{len(spec.ports)} ports is more than the {_MAX_PORTS} Istio allows",
            "split the service over several ServiceEntries",
        )
    # Istio: ShouldV2AutoAllocateIPFromConfig (PILOT_ENABLE_IP_AUTOALLOCATE is on by default)
    auto_allocated = (
        not spec.addresses
        and spec.resolution is not Resolution.NONE
        and labels.get(_AUTOALLOCATE_LABEL, "").lower() != "false"
    )
    by_name: dict[str, ServicePort] = {}
    first_of_number: dict[int, int] = {}
    names_seen: dict[str, int] = {}
    for i, port in enumerate(spec.ports):
        path: Path = ("spec", "ports", i)
        name = port.name or ""
        if name in names_seen:
            rep.error(
                (*path, "name"),
                f"port name {name!r} is already used by ports[{names_seen[name]}]",
                "give every port its own name",
            )
        else:
            names_seen[name] = i
            by_name[name] = port
        if not is_port_name(name):
            rep.error(
                (*path, "name"),
                f"port name {name!r} is not a valid DNS-1123 label"
                if name
                else "port name is empty",
                "use at most 63 letters, digits and '-', starting and ending with a letter "
                "or digit (e.g. http, grpc-api)",
            )
        number = port.number
        if number is not None:
            if not 1 <= number <= 65535:
                rep.error(
                    (*path, "number"),
                    f"port number {number} is out of range",
                    "use a port from 1 to 65535",
                )
            elif number in first_of_number:
                rep.error(
                    (*path, "number"),
                    f"port number {number} is already used by ports[{first_of_number[number]}]",
                    "each port number may appear once; serve several protocols on different "
                    "numbers",
                )
            else:
                first_of_number[number] = i
        if port.target_port is not None and not 1 <= port.target_port <= 65535:
            # validation.go skips 0 (proto3 "unset"), the CRD rule refuses it when written.
            rep.error(
                (*path, "targetPort"),
                f"targetPort {port.target_port} is out of range",
                "use a port from 1 to 65535, or leave targetPort out to use the port number",
            )
        protocol = port.parsed_protocol
        if port.protocol and protocol is None:
            names = {p.value.upper(): p.value for p in Protocol}
            close = difflib.get_close_matches(port.protocol.upper(), list(names), n=1)
            hint = f"did you mean {names[close[0]]!r}? " if close else ""
            rep.error(
                (*path, "protocol"),
                f"unsupported protocol {port.protocol!r}",
                f"{hint}use one of {', '.join(names.values())} (any case), or leave it unset "
                "to let Istio sniff HTTP",
            )
        elif (
            not spec.addresses
            and not auto_allocated
            and (protocol is None or protocol is Protocol.TCP)
        ):
            what = "TCP" if protocol is not None else "unset (sniffed)"
            shown = number if number is not None else "?"
            rep.warn(
                (*path, "protocol") if port.protocol else path,
                f"port {shown} has protocol {what} and the ServiceEntry has no addresses: "
                f"Istio can tell this traffic apart by port only, so it claims every "
                f"connection to port {shown}",
                "add spec.addresses, set protocol to HTTP/TLS if that is what the port "
                "speaks, or use a resolution other than NONE so Istio allocates an address",
            )
    return by_name


def _check_selector(spec: ServiceEntrySpec, rep: Reporter) -> None:
    selector = spec.workload_selector
    if selector is None:
        return
    path: Path = ("spec", "workloadSelector")
    if spec.endpoints:
        rep.error(
            path,
            "only one of workloadSelector and endpoints may be set",
            "list the endpoints inline, or select pods and WorkloadEntries with "
            "workloadSelector, not both",
        )
    labels = selector.labels
    check_selector_size(labels, (*path, "labels"), rep, _MAX_SELECTOR_LABELS)
    for key, value in labels.items():
        check_selector_label(key, value, (*path, "labels", key), rep)
    if not labels:
        rep.warn(
            path,
            "workloadSelector without labels selects every workload in the namespace",
            "add the labels of the workloads behind this service (e.g. app: backend)",
        )
    if spec.location is Location.MESH_EXTERNAL and spec.resolution is not Resolution.NONE:
        # inmesh hint: the API documents workloadSelector as "applicable only for
        # MESH_INTERNAL services"; Istio's validation does not check it.
        rep.warn(
            path,
            "workloadSelector with location MESH_EXTERNAL: Istio documents workloadSelector "
            "as applicable only to MESH_INTERNAL services",
            "set location: MESH_INTERNAL, since the selected workloads are part of the mesh",
        )


def _check_resolution_none(spec: ServiceEntrySpec, rep: Reporter) -> None:
    if spec.endpoints:
        rep.error(
            ("spec", "endpoints"),
            "endpoints are not allowed with resolution NONE (the default): traffic goes to "
            "the address the caller connected to",
            "set resolution: STATIC for IP endpoints or DNS for hostnames, or remove endpoints",
        )
    if spec.workload_selector is not None:
        rep.warn(
            ("spec", "workloadSelector"),
            "workloadSelector has no effect with resolution NONE",
            "set resolution: STATIC to send traffic to the selected workloads",
        )


def _check_resolution_dns(
    spec: ServiceEntrySpec,
    bad_hosts: set[int],
    ports_by_name: dict[str, ServicePort],
    rep: Reporter,
) -> None:
    res = spec.resolution.value
    if not spec.endpoints:
        # Without endpoints the proxy resolves the hosts themselves.
        for i, host in enumerate(spec.hosts):
            if i in bad_hosts:
                continue
            problem = fqdn_problem(host)
            if problem is not None:
                rep.error(
                    ("spec", "hosts", i),
                    f"host {host!r} cannot be resolved: resolution {res} without endpoints "
                    f"looks up the hosts themselves, and {problem}",
                    "list endpoints with resolvable addresses, or use resolution NONE "
                    "(or DYNAMIC_DNS for wildcard hosts)",
                )
    if spec.resolution is Resolution.DNS_ROUND_ROBIN and len(spec.endpoints) > 1:
        rep.error(
            ("spec", "endpoints"),
            f"resolution DNS_ROUND_ROBIN allows at most 1 endpoint, got {len(spec.endpoints)}",
            "use resolution DNS to balance over several endpoints",
        )
    for i, endpoint in enumerate(spec.endpoints):
        _check_workload(
            endpoint,
            ("spec", "endpoints", i),
            rep,
            mode="dns",
            ports=ports_by_name,
            resolution=spec.resolution,
        )
    if spec.addresses and len(spec.hosts) > 1:
        for port in spec.ports:
            protocol = port.parsed_protocol
            if protocol is not None and protocol.is_tcp:
                rep.warn(
                    ("spec", "hosts"),
                    f"{len(spec.hosts)} hosts share the addresses and TCP-level port "
                    f"{port.number}: connections to the address cannot tell the hosts apart",
                    "use one ServiceEntry per host",
                )
                break


def _check_resolution_dynamic_dns(
    spec: ServiceEntrySpec, labels: Mapping[str, str], rep: Reporter
) -> None:
    for i, host in enumerate(spec.hosts):
        if not host.startswith("*"):
            rep.error(
                ("spec", "hosts", i),
                f"host {host!r} is not a wildcard: resolution DYNAMIC_DNS resolves the name "
                "the caller asked for, which needs wildcard hosts",
                f"write a wildcard such as *.{host}, or use resolution DNS for a fixed host",
            )
    if spec.addresses:
        rep.error(
            ("spec", "addresses"),
            "addresses are not allowed with resolution DYNAMIC_DNS: routes are built from "
            "the hosts only",
            "remove addresses",
        )
    if spec.endpoints:
        rep.error(
            ("spec", "endpoints"),
            "endpoints are not allowed with resolution DYNAMIC_DNS: the destination comes "
            "from the requested host name",
            "remove endpoints, or use resolution DNS or STATIC",
        )
    for i, port in enumerate(spec.ports):
        if port.parsed_protocol not in _DYNAMIC_DNS_PROTOCOLS:
            shown = port.protocol or "unset"
            rep.error(
                ("spec", "ports", i, "protocol") if port.protocol else ("spec", "ports", i),
                f"protocol {shown} cannot be used with resolution DYNAMIC_DNS, which needs the "
                "host name from the Host header or SNI",
                "use protocol HTTP, HTTP2, GRPC or TLS",
            )
    waypoint = labels.get(_USE_WAYPOINT_LABEL, "")
    if spec.location is Location.MESH_INTERNAL and waypoint and waypoint.lower() != "none":
        rep.error(
            ("spec", "location"),
            f"location MESH_INTERNAL with resolution DYNAMIC_DNS is not supported with a "
            f"waypoint (label {_USE_WAYPOINT_LABEL}={waypoint})",
            "use location MESH_EXTERNAL, or remove the waypoint label",
        )


def _check_multiple_hosts(spec: ServiceEntrySpec, rep: Reporter) -> None:
    """Several hosts can share a port only if the proxy can tell them apart."""
    if spec.resolution is Resolution.NONE or len(spec.hosts) < 2:
        return
    for i, port in enumerate(spec.ports):
        protocol = port.parsed_protocol
        if protocol is not None and (protocol.is_http or protocol.is_tls):
            continue
        shown = protocol.value if protocol is not None else "unset"
        rep.error(
            ("spec", "ports", i, "protocol") if port.protocol else ("spec", "ports", i),
            f"{len(spec.hosts)} hosts with resolution {spec.resolution.value} and port "
            f"{port.number} of protocol {shown}: only HTTP (Host header) and TLS/HTTPS (SNI) "
            "ports can tell several hosts apart",
            "set the port's protocol to HTTP, HTTPS or TLS, use one ServiceEntry per host, "
            "or use resolution NONE",
        )
        return


# ---------------------------------------------------------------------------
# WorkloadEntry (standalone and inline)


def validate_workload_entry(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidateWorkloadEntry`` plus the CRD rules, on a parsed WorkloadEntry."""
    spec: WorkloadEntrySpec = resource.spec
    _check_workload(spec, ("spec",), rep, mode="entry", ports=None)


def _check_workload(
    we: WorkloadEntrySpec,
    path: Path,
    rep: Reporter,
    *,
    mode: _Mode,
    ports: Mapping[str, ServicePort] | None,
    resolution: Resolution | None = None,
) -> None:
    """One workload; ``ports`` are the ServiceEntry's ports by name (None for a WorkloadEntry)."""
    _check_workload_address(we, path, rep, mode=mode, ports=ports, resolution=resolution)
    _check_workload_ports(we, path, rep, ports)
    if len(we.labels) > _MAX_WE_LABELS:  # (CRD) maxProperties
        rep.error(
            (*path, "labels"),
            f"{len(we.labels)} labels is more than the {_MAX_WE_LABELS} Istio allows",
            "keep the labels that subsets and selectors use",
        )
    check_labels(we.labels, (*path, "labels"), rep)
    for attr, yaml_name, limit in (
        ("network", "network", _MAX_WE_NETWORK_LEN),
        ("locality", "locality", _MAX_WE_LOCALITY_LEN),
        ("service_account", "serviceAccount", _MAX_WE_SERVICE_ACCOUNT_LEN),
    ):
        value = getattr(we, attr)
        if value is not None and len(value) > limit:  # (CRD) maxLength
            rep.error(
                (*path, yaml_name),
                f"{yaml_name} is {len(value)} characters long; Istio allows at most {limit}",
                f"shorten {yaml_name}",
            )
    account = we.service_account
    too_long = account is not None and len(account) > _MAX_WE_SERVICE_ACCOUNT_LEN
    if account and not too_long and not is_k8s_dns1123_subdomain(account):
        # inmesh hint: Istio does not check it, but the workload identity
        # spiffe://<td>/ns/<ns>/sa/<account> needs a Kubernetes-style name.
        rep.warn(
            (*path, "serviceAccount"),
            f"serviceAccount {account!r} is not a valid Kubernetes service account name, so "
            f"the identity it implies (.../sa/{account}) is unlikely to match a certificate",
            "use lower-case letters, digits, '-' and '.' (e.g. backend-sa)",
        )
    if we.weight is not None and not 0 <= we.weight <= _UINT32_MAX:  # uint32 in the proto
        rep.error(
            (*path, "weight"),
            f"weight {we.weight} is out of range",
            "use a non-negative integer (higher weight, more traffic)",
        )


def _check_workload_address(
    we: WorkloadEntrySpec,
    path: Path,
    rep: Reporter,
    *,
    mode: _Mode,
    ports: Mapping[str, ServicePort] | None,
    resolution: Resolution | None,
) -> None:
    addr = we.address or ""
    apath: Path = (*path, "address")
    res = resolution.value if resolution is not None else "DNS"
    if len(addr) > _MAX_WE_ADDRESS_LEN:  # (CRD) maxLength
        rep.error(
            apath,
            f"address is {len(addr)} characters long; Istio allows at most {_MAX_WE_ADDRESS_LEN}",
            "use a shorter socket path or hostname",
        )
        return
    if not addr:
        if mode == "dns":
            rep.error(
                apath,
                f"endpoint address is required with resolution {res}",
                "give the endpoint's IP address or hostname",
            )
        elif not we.network:
            rep.error(
                apath,
                "address is required (an unset address needs network, for a workload "
                "reached through its network's gateway)",
                "set address to an IP, a hostname or unix:///path/to/socket",
            )
        else:
            rep.warn(
                apath,
                f"address is unset: the workload is reached only through the gateway of "
                f"network {we.network!r}, which inmesh does not model",
                "set address if the workload can be reached directly",
            )
        return
    if addr.startswith(_UNIX_PREFIX):
        if mode == "dns":
            rep.error(
                apath,
                f"{addr!r} is a Unix domain socket, which resolution {res} cannot resolve",
                "use resolution: STATIC for unix:// endpoints",
            )
            return
        problem = _unix_problem(addr[len(_UNIX_PREFIX) :])
        if problem is not None:
            rep.error(
                apath,
                f"{addr!r} is not a usable socket address: {problem}",
                "write unix:///absolute/path/to/socket, or unix://@name for an abstract socket",
            )
        if we.ports:
            rep.error(
                (*path, "ports"),
                "a unix:// endpoint must not have ports",
                "remove ports: the socket receives the traffic of the service's port",
            )
        if ports is not None and len(ports) != 1:
            rep.error(
                apath,
                f"a unix:// endpoint needs exactly 1 port in spec.ports, found {len(ports)}",
                "declare a single port on this ServiceEntry",
            )
        return
    if is_ip(addr):
        return
    if mode == "static":
        rep.error(
            apath,
            f"{addr!r} is not an IP address, and resolution STATIC uses endpoint "
            "addresses as they are",
            "write the endpoint's IP (or unix:///path), or set resolution: DNS to resolve "
            "hostnames",
        )
        return
    problem = fqdn_problem(addr)
    if problem is not None:
        rep.error(
            apath,
            f"{addr!r} is neither an IP address nor a valid hostname: {problem}",
            "write an IP address or a hostname such as db.example.com"
            + (", or unix:///path/to/socket" if mode == "entry" else ""),
        )


def _check_workload_ports(
    we: WorkloadEntrySpec, path: Path, rep: Reporter, ports: Mapping[str, ServicePort] | None
) -> None:
    if len(we.ports) > _MAX_WE_PORTS:  # (CRD) maxProperties
        rep.error(
            (*path, "ports"),
            f"{len(we.ports)} ports is more than the {_MAX_WE_PORTS} Istio allows",
            "map only the ports the service declares",
        )
    for name, number in we.ports.items():
        ppath: Path = (*path, "ports", name)
        if ports is not None and name not in ports:
            declared = ", ".join(repr(n) for n in ports) or "none"
            rep.error(
                ppath,
                f"port name {name!r} is not declared in spec.ports",
                f"endpoint ports map a port name of this ServiceEntry to the endpoint's "
                f"port; the declared names are: {declared}",
            )
        # ValidatePortName allows 63 characters, the CRD rule (size(key) < 63) 62.
        if not is_port_name(name) or len(name) > _MAX_WE_PORT_NAME_LEN:
            why = (
                f"is {len(name)} characters long"
                if len(name) > _MAX_WE_PORT_NAME_LEN
                else "is not a valid DNS-1123 label"
            )
            rep.error(
                ppath,
                f"port name {name!r} {why}",
                f"use at most {_MAX_WE_PORT_NAME_LEN} letters, digits and '-', starting and "
                "ending with a letter or digit",
            )
        if not 1 <= number <= 65535:
            rep.error(ppath, f"port {number} is out of range", "use a port from 1 to 65535")


# ---------------------------------------------------------------------------
# Addresses


def _unix_problem(socket_path: str) -> str | None:
    """``ValidateUnixAddress`` and the CRD rules for what follows ``unix://``."""
    if not socket_path:
        return "the path after unix:// is empty"
    if socket_path.endswith("/"):
        return "the path names a directory"
    if socket_path.startswith("@"):
        return None  # abstract socket
    if not socket_path.startswith("/"):
        return "the path is not absolute (write unix:///path, with three slashes)"
    return None
