"""The identity package's public surface: every name resolves and is documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

import inmesh.identity

MODULES = ["spiffe", "certificate", "ca", "sources", "tls"]


def test_lazy_names_resolve() -> None:
    for name in inmesh.identity.__all__:
        assert getattr(inmesh.identity, name) is not None, name
    with pytest.raises(AttributeError):
        _ = inmesh.identity.nope


@pytest.mark.parametrize("module", MODULES)
def test_public_names_are_documented(module: str) -> None:
    mod = importlib.import_module(f"inmesh.identity.{module}")
    assert mod.__doc__
    for name in mod.__all__:
        obj = getattr(mod, name)
        if getattr(obj, "__module__", None) != mod.__name__:
            continue  # constants and type aliases (documented by the string after them)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, (property, classmethod))
                    ):
                        continue
                    fn = member.__func__ if isinstance(member, classmethod) else member
                    assert fn.__doc__, f"{module}.{name}.{attr} has no docstring"


def test_cli_register_documented() -> None:
    from inmesh.cli import certs

    assert certs.__all__ == ["register"] and certs.register.__doc__
