"""The Swagger UI and ReDoc files the package serves are the vendored ones, and ship in the wheel."""

from __future__ import annotations

import hashlib
import json
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from prediction_provider.api.docs import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "prediction_provider"


def manifest() -> dict[str, object]:
    loaded: dict[str, object] = json.loads((STATIC_DIR / "manifest.json").read_text())
    return loaded


def served_files() -> set[str]:
    return {
        path.relative_to(STATIC_DIR).as_posix()
        for path in STATIC_DIR.rglob("*")
        if path.is_file() and path.name != "manifest.json"
    }


def test_every_vendored_file_matches_its_checksum() -> None:
    checksums = manifest()["sha256"]
    assert isinstance(checksums, dict)
    assert set(checksums) == served_files()  # nothing unlisted, nothing missing
    for name, expected in checksums.items():
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == expected, name


def test_the_pages_scripts_and_styles_are_vendored() -> None:
    files = served_files()
    assert {"swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css"} <= files
    assert "redoc/redoc.standalone.js" in files
    assert {"swagger-ui/LICENSE", "redoc/LICENSE"} <= files
    packages = manifest()["packages"]
    assert isinstance(packages, dict)
    assert set(packages) == {"swagger-ui-dist", "redoc"}


def test_the_package_data_globs_cover_every_static_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["prediction_provider"]
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            relative = path.relative_to(PACKAGE_DIR).as_posix()
            # setuptools globs do not cross "/" with "*", as fnmatch would: compare part by part.
            assert any(
                glob.count("/") == relative.count("/") and fnmatch(relative, glob) for glob in globs
            ), relative
