"""Offers, prices, quotes, paid requests and evaluator leases."""
