"""Tests of inmesh.resilience (sans I/O: fake clocks, seeded random)."""
