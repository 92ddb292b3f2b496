"""Istio's validation rules, one module per kind (see istio/istio pkg/config/validation)."""
