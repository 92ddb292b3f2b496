"""ServiceEntry and WorkloadEntry checks (placeholder, filled in by the validation work)."""

from __future__ import annotations

from typing import Any

from .._schema import Reporter


def validate_service_entry(resource: Any, rep: Reporter) -> None:
    pass


def validate_workload_entry(resource: Any, rep: Reporter) -> None:
    pass
