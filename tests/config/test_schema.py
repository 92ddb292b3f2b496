"""The generic parser's messages: did-you-mean, where a field belongs, types, oneofs."""

from __future__ import annotations

from inmesh.config.load import load_text
from tests.config.helpers import load_spec, resource_yaml


def only_error(kind: str, spec: str) -> str:
    errors = load_spec(kind, spec).errors
    assert len(errors) == 1, [str(e) for e in errors]
    return str(errors[0])


def test_snake_case_gets_the_camel_case_name() -> None:
    text = only_error("ServiceEntry", "hosts: [a.example.com]\nsubject_alt_names: [x]")
    assert "did you mean 'subjectAltNames'?" in text


def test_suffix_match_suggests_match_labels() -> None:
    text = only_error("PeerAuthentication", "selector: {labels: {app: a}}")
    assert "spec.selector.labels" in text and "did you mean 'matchLabels'?" in text


def test_field_of_another_kind_says_where_it_belongs() -> None:
    text = only_error("ServiceEntry", "hosts: [a.example.com]\nsubsets: []")
    assert "it belongs in DestinationRule spec.subsets" in text


def test_wrong_type_says_what_was_expected() -> None:
    text = only_error("ServiceEntry", "hosts: a.example.com")
    assert "spec.hosts: expected a list, got string 'a.example.com'" in text


def test_number_where_string_expected_suggests_quoting() -> None:
    text = only_error("WorkloadEntry", "address: 10.0.0.1\nlabels: {version: 1}")
    assert "quote it" in text


def test_oneof_violation() -> None:
    result = load_spec(
        "VirtualService",
        "hosts: [a]\nhttp:\n- match: [{uri: {exact: /a, prefix: /b}}]\n  route: [{destination: {host: a}}]",
    )
    assert any("only one of exact, prefix, regex" in str(e) for e in result.errors)


def test_required_field_has_a_fix() -> None:
    result = load_spec("ServiceEntry", "ports: [{number: 80, name: http}]")
    (err,) = [e for e in result.errors if e.path == "spec.hosts"]
    assert err.fix.startswith("add hosts")


def test_reserved_annotation_is_refused() -> None:
    text = resource_yaml(
        "WorkloadEntry",
        "address: 10.0.0.1",
        metadata_extra="annotations: {internal.istio.io/webhook-always-reject: 'true'}",
    )
    errors = load_text(text).errors
    assert any("reserved for Istio" in str(e) for e in errors)


def test_unknown_top_level_field() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspce: {}\n"
    )
    errors = load_text(text).errors
    assert any(e.path == "spce" and e.line == 4 for e in errors)


def test_wrong_api_version_lists_the_served_ones() -> None:
    text = "apiVersion: security.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 1.2.3.4}\n"
    (err,) = load_text(text).errors
    assert err.path == "apiVersion" and "networking.istio.io/v1" in err.fix


def test_not_enforced_fields_warn_once_at_the_outermost_field() -> None:
    result = load_spec(
        "DestinationRule",
        "host: a\ntrafficPolicy:\n  loadBalancer: {simple: RANDOM}\n"
        "  connectionPool: {tcp: {maxConnections: 1}, http: {h2UpgradePolicy: UPGRADE}}",
    )
    assert not result.errors
    warned = [w.path for w in result.warnings if "not enforced yet" in w.message]
    assert warned == ["spec.trafficPolicy.connectionPool.http.h2UpgradePolicy"]


def test_namespace_defaults_and_list_items_keep_lines() -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: networking.istio.io/v1\n  kind: WorkloadEntry\n  metadata: {name: a}\n"
        "  spec: {address: 10.0.0.1, weigth: 2}\n"
    )
    result = load_text(text, default_namespace="prod")
    (err,) = result.errors
    assert err.line == 7 and err.namespace == "prod" and err.path == "spec.weigth"
