from __future__ import annotations

from pathlib import Path

import pytest

from prediction_provider.errors import UntrustedModelPath
from prediction_provider.serving.trust import is_under_roots, require_trusted


def test_paths_inside_a_root_are_trusted(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    assert is_under_roots(root / "a" / "model.onnx", [root])


def test_dot_dot_cannot_escape_a_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    assert not is_under_roots(root / ".." / "secret.pkl", [root])
    with pytest.raises(UntrustedModelPath):
        require_trusted(root / ".." / "secret.pkl", [root], "test")


def test_symlinks_out_of_a_root_are_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(b"x")
    (root / "link.pkl").symlink_to(outside)
    assert not is_under_roots(root / "link.pkl", [root])


def test_a_root_prefix_is_not_a_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    assert not is_under_roots(tmp_path / "models-evil" / "m.pkl", [root])
