"""Tests of inmesh.upstream (pure: no I/O)."""
