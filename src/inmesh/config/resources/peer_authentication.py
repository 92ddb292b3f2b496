"""Stub: replaced by the full model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerAuthenticationSpec:
    pass
