"""Asynchronous prediction jobs: the stored lifecycle, its executors and batch scoring."""
