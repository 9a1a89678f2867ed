"""Adapters: one module per outside system; the only place its SDK is imported."""
