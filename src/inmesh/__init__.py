"""inmesh: a service mesh inside the process.

Istio's YAML, Envoy's semantics, no sidecar. Importing ``inmesh`` does no
work: submodules load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__
from .errors import (
    CertificateError,
    ConfigError,
    Diagnostic,
    IdentityError,
    InmeshError,
    Severity,
)

if TYPE_CHECKING:
    from .config.snapshot import ConfigOptions, ConfigSnapshot
    from .config.store import ConfigStore
    from .mesh import Mesh
    from .model import Workload

__all__ = [
    "CertificateError",
    "ConfigError",
    "ConfigOptions",
    "ConfigSnapshot",
    "ConfigStore",
    "Diagnostic",
    "IdentityError",
    "InmeshError",
    "Mesh",
    "Severity",
    "Workload",
    "__version__",
]

_LAZY = {
    "ConfigOptions": "inmesh.config.snapshot",
    "ConfigSnapshot": "inmesh.config.snapshot",
    "ConfigStore": "inmesh.config.store",
    "Mesh": "inmesh.mesh",
    "Workload": "inmesh.model",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
