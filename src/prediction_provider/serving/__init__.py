"""Serving core: model references, registry, loaders, LRU cache and inference."""
