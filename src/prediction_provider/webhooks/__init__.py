"""Signed webhooks (Standard Webhooks), delivered at least once from a transactional outbox."""
