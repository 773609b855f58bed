"""Confinement of model files to the configured trusted roots."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prediction_provider.errors import UntrustedModelPath


def is_under_roots(path: Path, roots: Iterable[Path]) -> bool:
    """True when ``path``, with symlinks and ``..`` resolved, lies inside one of ``roots``."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def require_trusted(path: Path, roots: Iterable[Path], reason: str) -> None:
    """Refuse before anything opens ``path``: the check looks only at the name."""
    roots = tuple(roots)
    if not is_under_roots(path, roots):
        raise UntrustedModelPath(
            f"{reason}: {path} is outside the trusted model roots",
            {"path": str(path)},
        )
