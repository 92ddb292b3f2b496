"""The YAML layer: values, line numbers, and hostile input."""

from __future__ import annotations

import pytest

from inmesh.config._yaml import YamlError, line_of, load_documents


def test_lines_of_every_field() -> None:
    docs = load_documents("a: 1\nb:\n  c: [x, y]\n  d:\n  - e: 2\n")
    (doc,) = docs
    assert doc.value == {"a": 1, "b": {"c": ["x", "y"], "d": [{"e": 2}]}}
    assert doc.lines[("a",)] == 1
    assert doc.lines[("b", "c")] == 3
    assert doc.lines[("b", "d", 0, "e")] == 5
    assert line_of(doc.lines, ("b", "d", 0, "e", "missing")) == 5


def test_multi_document_streams_skip_empty_documents() -> None:
    docs = load_documents("---\na: 1\n---\n---\nb: 2\n...\n")
    assert [d.value for d in docs] == [{"a": 1}, {"b": 2}]
    assert docs[1].line == 5


def test_scalars_resolve_like_yaml_1_1() -> None:
    (doc,) = load_documents("a: yes\nb: '1'\nc: 0x10\nd: 1.5\ne: ~\nf: 2024-01-01\ng: word\n")
    assert doc.value == {
        "a": True,
        "b": "1",
        "c": 16,
        "d": 1.5,
        "e": None,
        "f": "2024-01-01",
        "g": "word",
    }


def test_json_is_yaml() -> None:
    (doc,) = load_documents('{"kind": "List", "items": [1, 2]}')
    assert doc.value == {"kind": "List", "items": [1, 2]}


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    with pytest.raises(YamlError) as info:
        load_documents("a: 1\nb: 2\na: 3\n")
    assert info.value.line == 3
    assert "first at line 1" in info.value.message


def test_merge_keys() -> None:
    (doc,) = load_documents("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n")
    assert doc.value["derived"] == {"x": 1, "y": 2}


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(YamlError):
        load_documents("a: &a [*a]\n")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(YamlError):
        load_documents("[" * 500 + "]" * 500)


def test_syntax_error_has_a_line() -> None:
    with pytest.raises(YamlError) as info:
        load_documents("a: 1\nb: [2\nc: 3\n")
    assert info.value.line >= 2


def test_non_utf8_is_refused() -> None:
    with pytest.raises(YamlError, match="UTF-8"):
        load_documents(b"a: \xff\xfe\n")


def test_bom_is_accepted() -> None:
    (doc,) = load_documents("\ufeffa: 1\n".encode())
    assert doc.value == {"a": 1}


def test_python_tags_are_refused() -> None:
    with pytest.raises(YamlError):
        load_documents("a: !!python/object/apply:os.system ['true']\n")


def test_non_scalar_keys_are_refused() -> None:
    with pytest.raises(YamlError):
        load_documents("? [a, b]\n: 1\n")
