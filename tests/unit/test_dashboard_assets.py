"""The dashboard's vendored htmx, SSE extension, uPlot and axe-core are the pinned releases, and ship.

These checks need no Node: they re-hash the committed copies against the manifests that
``scripts/vendor_assets.py`` wrote, and compare the manifests with the pins in ``package.json`` and
``package-lock.json``. CI additionally runs ``npm ci`` and ``vendor_assets.py --check``, which compares
the copies with the registry's tarballs.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = Path(str(files("prediction_provider.dashboard")))
PACKAGE_VENDOR = DASHBOARD_DIR / "static" / "vendor"
TEST_VENDOR = ROOT / "tests" / "e2e" / "dashboard" / "vendor"
MANIFEST = "MANIFEST.json"


def load_json(path: Path) -> dict[str, object]:
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def manifest(folder: Path) -> dict[str, dict[str, str]]:
    return load_json(folder / MANIFEST)  # type: ignore[return-value]


def vendored(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.is_file() and path.name != MANIFEST}


def pins(section: str) -> dict[str, str]:
    declared = load_json(ROOT / "package.json")[section]
    assert isinstance(declared, dict)
    return declared


@pytest.mark.parametrize("folder", [PACKAGE_VENDOR, TEST_VENDOR], ids=["package", "tests"])
def test_every_vendored_file_matches_its_manifest(folder: Path) -> None:
    entries = manifest(folder)
    assert set(entries) == vendored(folder)  # nothing unlisted, nothing missing
    for name, entry in entries.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"], name


@pytest.mark.parametrize(
    ("folder", "section"),
    [(PACKAGE_VENDOR, "dependencies"), (TEST_VENDOR, "devDependencies")],
    ids=["package", "tests"],
)
def test_the_manifest_versions_are_the_pinned_ones(folder: Path, section: str) -> None:
    pinned = pins(section)
    lock = load_json(ROOT / "package-lock.json")["packages"]
    assert isinstance(lock, dict)
    entries = manifest(folder)
    # Every pinned package of this kind is vendored here, and nothing else is.
    assert {entry["package"] for entry in entries.values()} == set(pinned)
    for name, entry in entries.items():
        version = pinned[entry["package"]]
        assert entry["version"] == version, name
        assert lock[f"node_modules/{entry['package']}"]["version"] == version, name
        # Versioned names: the static route caches them as immutable.
        assert f"-{version}." in name, name


def test_the_expected_libraries_are_vendored() -> None:
    assert {
        "htmx-2.0.11.min.js",
        "htmx-ext-sse-2.2.4.js",
        "uplot-1.6.32.min.js",
        "uplot-1.6.32.min.css",
        "htmx.org-2.0.11.LICENSE.txt",
        "htmx-ext-sse-2.2.4.LICENSE.txt",
        "uplot-1.6.32.LICENSE.txt",
    } <= vendored(PACKAGE_VENDOR)
    assert {"axe-core-4.14.1.min.js", "axe-core-4.14.1.LICENSE.txt"} <= vendored(TEST_VENDOR)
    # axe-core is for the accessibility tests only: it never ships in the wheel.
    assert not any(name.startswith("axe-core") for name in vendored(PACKAGE_VENDOR))


def test_the_lockfile_names_no_registry_host() -> None:
    text = (ROOT / "package-lock.json").read_text(encoding="utf-8")
    assert '"resolved"' not in text
    assert "://" not in text


def glob_matches(glob: str, relative: str) -> bool:
    """setuptools' package-data globs: ``*`` stays within one path part, ``**`` spans any number."""

    def match(patterns: list[str], parts: list[str]) -> bool:
        if not patterns:
            return not parts
        if patterns[0] == "**":
            return any(match(patterns[1:], parts[skip:]) for skip in range(len(parts) + 1))
        return bool(parts) and fnmatch(parts[0], patterns[0]) and match(patterns[1:], parts[1:])

    return match(glob.split("/"), relative.split("/"))


def dashboard_globs() -> list[str]:
    """The package-data globs that reach the dashboard package, relative to it, whichever key holds them."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = list(declared.get("prediction_provider.dashboard", []))
    globs += [
        glob.removeprefix("dashboard/")
        for glob in declared.get("prediction_provider", [])
        if glob.startswith("dashboard/")
    ]
    return globs


def test_the_package_data_globs_cover_every_vendored_file() -> None:
    globs = dashboard_globs()
    assert glob_matches("static/vendor/*", "static/vendor/x.js")  # the matcher itself
    assert not glob_matches("static/*.js", "static/vendor/x.js")
    assert glob_matches("templates/**/*.html", "templates/a/b/page.html")
    for path in PACKAGE_VENDOR.iterdir():
        relative = path.relative_to(DASHBOARD_DIR).as_posix()
        assert any(glob_matches(glob, relative) for glob in globs), relative
    for expected in ("templates/base.html", "templates/views/page.html", "static/dashboard.js"):
        assert any(glob_matches(glob, expected) for glob in globs), expected
