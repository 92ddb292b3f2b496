"""The public surface of inmesh.discovery: exports, docstrings, no work at import."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing

import inmesh.discovery
from inmesh.discovery import _build, _hosts, _resolver, _schedule, _values, dns, registry

MODULES = [inmesh.discovery, registry, dns, _build, _hosts, _resolver, _schedule, _values]


def test_every_module_declares_a_sorted_all() -> None:
    for module in MODULES:
        names = module.__all__
        assert names == sorted(names, key=lambda n: (not n.isupper(), n)), module.__name__
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_public_classes_functions_and_methods_are_documented() -> None:
    for module in MODULES:
        assert module.__doc__, module.__name__
        for name in module.__all__:
            obj = getattr(module, name)
            if typing.get_origin(obj) is not None:  # a type alias such as Subscriber
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            assert obj.__doc__, f"{module.__name__}.{name}"
            if not inspect.isclass(obj):
                continue
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(getattr(obj, attr)):
                    if isinstance(member, property):
                        assert member.__doc__, f"{name}.{attr}"
                    continue
                assert getattr(obj, attr).__doc__, f"{name}.{attr}"


def test_import_starts_no_thread_and_loads_no_dns_library() -> None:
    code = (
        "import sys, threading; import inmesh.discovery; "
        "print(threading.active_count(), [m for m in ('dns', 'tenacity') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1 []"
