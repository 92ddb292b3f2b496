"""Outbound I/O over anyio, for asyncio and trio (async source)."""

__all__: list[str] = []
