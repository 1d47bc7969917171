"""Adapters of the k8s-agent: one module per external system."""
