"""Istio configuration: loading, the typed model, validation, snapshots, the store."""
