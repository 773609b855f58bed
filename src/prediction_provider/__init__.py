"""Prediction Provider: a serving platform for financial prediction models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prediction-provider")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
