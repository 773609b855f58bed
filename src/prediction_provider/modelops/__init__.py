"""Model operations in the request path: experiments (A/B, shadow, canary), resilience (timeouts,
bulkheads, circuit breakers, fallbacks), ensembles and drift monitoring."""
