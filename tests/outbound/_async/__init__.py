"""The connector tests (async source)."""
