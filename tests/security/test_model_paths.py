"""Model references that try to leave the trusted model roots.

The roots are ``<data_dir>/artifacts`` and ``<data_dir>/models``. Every escape
must be refused, 403 when the path resolves outside them and 422 when the
reference is malformed, before the target is opened. Most targets are a pickle
whose unpickling creates a marker file, so "never opened" is checked, not
assumed.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from tests.security.support import error_of, unique, users_unchanged


class _Booby:
    """Unpickling this creates a marker file: proof that the file was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@dataclass(frozen=True)
class Trap:
    pickle: Path  # outside every trusted root
    marker: Path
    models_root: Path  # trusted
    symlink: Path  # inside models_root, pointing at the pickle


@pytest.fixture
def trap(tmp_path: Path, settings: Settings) -> Iterator[Trap]:
    marker = tmp_path / "unpickled"
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = outside / "model.pkl"
    evil.write_bytes(pickle.dumps(_Booby(marker)))
    models_root = (settings.data_dir / "models").resolve()
    models_root.mkdir(parents=True, exist_ok=True)
    assert not evil.resolve().is_relative_to(settings.data_dir.resolve())
    symlink = models_root / f"{unique('escape')}.pkl"
    symlink.symlink_to(evil)
    try:
        yield Trap(evil, marker, models_root, symlink)
    finally:
        symlink.unlink()


def file_uri(path: str) -> str:
    """``file://`` + an absolute path, kept as written (no resolving of ``..``)."""
    assert path.startswith("/")
    return f"file://{path}"


def dots_to_root(root: Path) -> str:
    """Enough ``../`` to climb from ``root`` to ``/``."""
    return "../" * len(root.parts)


# name -> (the reference, built from the trap; the expected status; the expected error code)
ESCAPES: dict[str, tuple[Callable[[Trap], str], int, str]] = {
    "etc-passwd": (lambda t: "file:///etc/passwd", 403, "untrusted_model_path"),
    "etc-passwd-via-localhost": (lambda t: "file://localhost/etc/passwd", 403, "untrusted_model_path"),
    "dot-dot-from-the-models-root-to-etc-passwd": (
        lambda t: file_uri(f"{t.models_root}/{dots_to_root(t.models_root)}etc/passwd"),
        403,
        "untrusted_model_path",
    ),
    "two-dot-dots-from-the-models-root": (
        lambda t: file_uri(f"{t.models_root}/../../etc/passwd"),
        403,
        "untrusted_model_path",
    ),
    "pickle-outside-the-roots": (lambda t: file_uri(str(t.pickle)), 403, "untrusted_model_path"),
    "dot-dot-from-the-models-root-to-the-pickle": (
        lambda t: file_uri(f"{t.models_root}/{os.path.relpath(t.pickle, t.models_root)}"),
        403,
        "untrusted_model_path",
    ),
    "percent-encoded-dot-dots-to-the-pickle": (
        lambda t: file_uri(
            f"{t.models_root}/{os.path.relpath(t.pickle, t.models_root).replace('..', '%2e%2e')}"
        ),
        403,
        "untrusted_model_path",
    ),
    "symlink-in-the-models-root-to-the-pickle": (
        lambda t: file_uri(str(t.symlink)),
        403,
        "untrusted_model_path",
    ),
    "remote-host": (lambda t: "file://evil.example/etc/passwd", 422, "invalid_model_reference"),
    "runs-dot-dot": (lambda t: "runs:/abc/../../x", 422, "invalid_model_reference"),
    "runs-dot-dot-to-the-pickle": (
        lambda t: f"runs:/abc/{os.path.relpath(t.pickle, t.models_root)}",
        422,
        "invalid_model_reference",
    ),
    "models-dot-dot": (lambda t: "models:/../x/1", 422, "invalid_model_reference"),
    "models-dot-dot-alias": (lambda t: "models:/..@champion", 422, "invalid_model_reference"),
    "bare-dot-dot": (lambda t: "..", 422, "invalid_model_reference"),
}


@pytest.mark.parametrize("escape", ESCAPES)
@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_model_reference_cannot_escape_the_trusted_roots(
    client: httpx.Client,
    db: Database,
    trap: Trap,
    feature_rows: list[dict[str, float]],
    route: str,
    escape: str,
) -> None:
    make, status, code = ESCAPES[escape]
    reference = make(trap)
    body: dict[str, Any] = {"model": reference, "features": feature_rows[0]}
    if route == "/predict/batch":
        body = {"model": reference, "features_list": [feature_rows[0]]}
    with users_unchanged(db):
        response = client.post(route, json=body)
    error_of(response, status, code)
    assert not trap.marker.exists(), f"{reference} was unpickled"


def test_the_trap_goes_off_when_the_pickle_is_opened(trap: Trap) -> None:
    """The control: the marker does prove an unpickling, so its absence above means something."""
    with trap.symlink.open("rb") as handle:
        pickle.load(handle)  # our own file, loaded to prove the trap works
    assert trap.marker.exists()
