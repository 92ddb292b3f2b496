"""Turning typed resources back into Istio-shaped data (for ``inmesh config dump``).

``to_data`` writes camelCase keys, enum names, durations as written, and —
with ``fill_defaults`` — the value Istio would use for every unset field
that declares an ``istio_default``, inside the blocks that are present.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from ._schema import fields_of
from .resources._common import Duration, Resource
from .snapshot import ConfigSnapshot

__all__ = ["resource_to_data", "snapshot_to_data", "to_data"]


def to_data(value: Any, *, fill_defaults: bool = False) -> Any:
    """Plain JSON/YAML-ready data for a model value."""
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Duration):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {str(k): to_data(v, fill_defaults=fill_defaults) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_data(v, fill_defaults=fill_defaults) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields_of(type(value)):
            v = getattr(value, f.attr)
            if v is None or (isinstance(v, (tuple, Mapping)) and not v):
                if fill_defaults and f.istio_default is not None:
                    out[f.yaml] = to_data(f.istio_default, fill_defaults=False)
                continue
            out[f.yaml] = to_data(v, fill_defaults=fill_defaults)
        return out
    raise TypeError(f"cannot dump {type(value).__name__}")


def resource_to_data(resource: Resource[Any], *, fill_defaults: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": resource.name, "namespace": resource.namespace}
    if resource.metadata.labels:
        meta["labels"] = dict(resource.metadata.labels)
    if resource.metadata.annotations:
        meta["annotations"] = dict(resource.metadata.annotations)
    if resource.metadata.creation_timestamp:
        meta["creationTimestamp"] = resource.metadata.creation_timestamp
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": meta,
        "spec": to_data(resource.spec, fill_defaults=fill_defaults),
    }


def snapshot_to_data(snapshot: ConfigSnapshot, *, fill_defaults: bool = True) -> dict[str, Any]:
    """The snapshot as a Kubernetes ``List`` (loadable again by inmesh and kubectl)."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": snapshot.version},
        "items": [resource_to_data(r, fill_defaults=fill_defaults) for r in snapshot.resources],
    }
