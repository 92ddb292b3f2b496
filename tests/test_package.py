"""The public surface: exports, version, import cost, no work at import."""

from __future__ import annotations

import subprocess
import sys

import inmesh


def test_all_is_sorted_and_complete() -> None:
    assert inmesh.__all__ == sorted(inmesh.__all__)
    for name in inmesh.__all__:
        assert getattr(inmesh, name) is not None, name


def test_public_names_are_documented() -> None:
    for name in inmesh.__all__:
        obj = getattr(inmesh, name)
        if name.startswith("__"):
            continue
        assert obj.__doc__, f"{name} has no docstring"


def test_version_matches_metadata() -> None:
    from importlib.metadata import version

    assert inmesh.__version__ == version("inmesh")


def test_import_does_no_work() -> None:
    """`import inmesh` starts no thread, loads no YAML/HTTP/crypto library."""
    code = (
        "import sys, threading; import inmesh; "
        "heavy = [m for m in ('yaml', 'httpx', 'cryptography', 'anyio', 'prometheus_client', "
        "'opentelemetry') if m in sys.modules]; "
        "print(threading.active_count(), heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1 []"


def test_unknown_attribute_raises() -> None:
    import pytest

    with pytest.raises(AttributeError):
        _ = inmesh.NoSuchThing  # type: ignore[attr-defined]
