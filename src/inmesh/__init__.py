"""inmesh: a service mesh inside the process."""
from ._version import __version__

__all__ = ["__version__"]
