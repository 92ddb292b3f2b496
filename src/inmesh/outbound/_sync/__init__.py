"""Outbound I/O over anyio, for asyncio and trio (generated from the _async twin by scripts/unasync.py: do not edit)."""

__all__: list[str] = []
