"""Property tests: whatever the input, loading ends in a snapshot or a ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmesh.config.snapshot import ConfigSnapshot, build_snapshot
from inmesh.errors import ConfigError

SEEDS = Path(__file__).resolve().parents[2] / "tests" / "config" / "corpus"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["", "*", "100ms", "-1s", "0s", "STRICT", "v1", "a.b.c", "10.0.0.1/33", "%00", "{**}"]
    ),
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def check(text: str) -> None:
    try:
        snap = build_snapshot(text)
    except ConfigError as exc:
        assert exc.errors, "a ConfigError always carries at least one error"
        for e in exc.errors:
            assert str(e)
        return
    assert isinstance(snap, ConfigSnapshot)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    check(text)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_arbitrary_yaml_values(value: Any) -> None:
    check(yaml.safe_dump(value))


def _valid_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(SEEDS.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


VALID = _valid_documents()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for p in path[:-1]:
            parent = parent[p]
        op = draw(st.sampled_from(["replace", "delete", "insert", "wrap"]))
        key = path[-1]
        if op == "replace":
            parent[key] = draw(json_like)
        elif op == "delete":
            del parent[key]
        elif op == "insert" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(json_like)
        elif op == "wrap":
            parent[key] = [parent[key]]
    return doc


def test_corpus_is_valid() -> None:
    assert len(VALID) >= 6
    for doc in VALID:
        build_snapshot(yaml.safe_dump(doc))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_of_valid_resources(doc: dict[str, Any]) -> None:
    check(yaml.safe_dump(doc))
