"""Tests of inmesh.inbound: decisions, middleware, real servers and processes."""
