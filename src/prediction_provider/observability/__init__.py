"""Audit trail, metrics and logs."""
