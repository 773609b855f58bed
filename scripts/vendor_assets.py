"""Copy the dashboard's browser libraries from ``node_modules`` into the repository, with checksums.

Why: the dashboard serves htmx, its SSE extension and uPlot from ``/dashboard/static/vendor/``
(CSP ``'self'``, no CDN), and ``pip install`` or a wheel build must never need Node. So the copies
are committed, under names that carry their versions (the static route caches them as
``immutable``), next to a ``MANIFEST.json`` that records package, version and sha256 for each file;
``tests/unit/test_dashboard_assets.py`` re-hashes them without Node.

axe-core only serves the browser accessibility tests: it goes to ``tests/e2e/dashboard/vendor/``,
with a manifest of its own, and never into the package.

Usage, after ``npm ci`` (or ``npm install``) in the repository root::

    python scripts/vendor_assets.py           # (re)write the copies and both manifests
    python scripts/vendor_assets.py --check   # CI: exit 1, listing every file that drifted

The versions come from each installed package's ``package.json`` and must equal the exact pins in
``package.json`` and ``package-lock.json``: a stale ``node_modules`` fails instead of vendoring the
wrong release.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "node_modules"
PACKAGE_VENDOR = ROOT / "src" / "prediction_provider" / "dashboard" / "static" / "vendor"
TEST_VENDOR = ROOT / "tests" / "e2e" / "dashboard" / "vendor"
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class Asset:
    """One file to vendor: where it lives inside its npm package, and the versioned name it gets.

    ``target`` is a template: ``{version}`` is filled in from the installed package, so a version
    bump in ``package.json`` renames the file and browsers never keep a stale cached copy.
    """

    package: str
    source: str
    target: str
    destination: Path


def _assets() -> tuple[Asset, ...]:
    """Every vendored file, in manifest order.

    The htmx SSE extension ships ``dist/sse.js`` and ``dist/sse.min.js``; the minified one is taken
    (same code, a third of the bytes) but keeps the short name the templates reference.
    """
    shipped = PACKAGE_VENDOR
    test_only = TEST_VENDOR
    return (
        Asset("htmx.org", "dist/htmx.min.js", "htmx-{version}.min.js", shipped),
        Asset("htmx.org", "LICENSE", "htmx.org-{version}.LICENSE.txt", shipped),
        Asset("htmx-ext-sse", "dist/sse.min.js", "htmx-ext-sse-{version}.js", shipped),
        Asset("htmx-ext-sse", "LICENSE", "htmx-ext-sse-{version}.LICENSE.txt", shipped),
        Asset("uplot", "dist/uPlot.iife.min.js", "uplot-{version}.min.js", shipped),
        Asset("uplot", "dist/uPlot.min.css", "uplot-{version}.min.css", shipped),
        Asset("uplot", "LICENSE", "uplot-{version}.LICENSE.txt", shipped),
        Asset("axe-core", "axe.min.js", "axe-core-{version}.min.js", test_only),
        Asset("axe-core", "LICENSE", "axe-core-{version}.LICENSE.txt", test_only),
        # axe.min.js bundles third-party code; its notices travel with it.
        Asset("axe-core", "LICENSE-3RD-PARTY.txt", "axe-core-{version}.LICENSE-3RD-PARTY.txt", test_only),
    )


class VendorError(Exception):
    """``node_modules`` does not match the pins: nothing is written, and the message says why."""


def _read_json(path: Path) -> dict[str, object]:
    """Load a JSON object, turning a missing file into a hint to run ``npm ci`` first."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VendorError(f"{path.relative_to(ROOT)} is missing: run `npm ci` first") from exc
    if not isinstance(loaded, dict):
        raise VendorError(f"{path.relative_to(ROOT)} is not a JSON object")
    return loaded


def pinned_versions() -> dict[str, str]:
    """The exact version of every vendored package, agreed by package.json, the lockfile and node_modules.

    Why three sources: package.json is what people edit, the lockfile is what ``npm ci`` installs,
    and node_modules is what gets copied. Any disagreement means a half-done upgrade, which should
    stop the run rather than commit files the lockfile does not describe.
    """
    manifest = _read_json(ROOT / "package.json")
    lock = _read_json(ROOT / "package-lock.json")
    declared: dict[str, object] = {}
    for field in ("dependencies", "devDependencies"):
        section = manifest.get(field, {})
        if isinstance(section, dict):
            declared.update(section)
    locked = lock.get("packages", {})
    if not isinstance(locked, dict):
        raise VendorError("package-lock.json has no `packages` (lockfileVersion 3 expected)")

    versions: dict[str, str] = {}
    for name in dict.fromkeys(asset.package for asset in _assets()):
        pin = declared.get(name)
        if not isinstance(pin, str) or not pin[:1].isdigit():
            raise VendorError(f"package.json must pin {name} to an exact version, not {pin!r}")
        entry = locked.get(f"node_modules/{name}")
        lock_version = entry.get("version") if isinstance(entry, dict) else None
        if lock_version != pin:
            raise VendorError(f"package-lock.json has {name} {lock_version}, package.json pins {pin}")
        installed = _read_json(NODE_MODULES / name / "package.json").get("version")
        if installed != pin:
            raise VendorError(f"node_modules has {name} {installed}, the lockfile pins {pin}: run `npm ci`")
        versions[name] = pin
    return versions


def expected_files() -> dict[Path, dict[Path, bytes]]:
    """What each vendor folder should hold, byte for byte, manifests included, computed from node_modules.

    Built entirely in memory so that ``--check`` and a real run share one code path: the check is
    exactly "would a run change anything".
    """
    versions = pinned_versions()
    folders: dict[Path, dict[Path, bytes]] = {}
    manifests: dict[Path, dict[str, dict[str, str]]] = {}
    for asset in _assets():
        version = versions[asset.package]
        source = NODE_MODULES / asset.package / asset.source
        try:
            content = source.read_bytes()
        except FileNotFoundError as exc:
            raise VendorError(f"{asset.package}@{version} does not ship {asset.source}") from exc
        name = asset.target.format(version=version)
        folders.setdefault(asset.destination, {})[asset.destination / name] = content
        manifests.setdefault(asset.destination, {})[name] = {
            "package": asset.package,
            "version": version,
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    for folder, entries in manifests.items():
        text = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
        folders[folder][folder / MANIFEST] = text.encode("utf-8")
    return folders


def _present(folder: Path) -> set[Path]:
    """The files a vendor folder holds now (the folder is owned by this script alone)."""
    return {path for path in folder.iterdir() if path.is_file()} if folder.is_dir() else set()


def drift(folders: dict[Path, dict[Path, bytes]]) -> list[str]:
    """Every file that differs from what a run would write: changed, missing, or no longer vendored."""
    problems: list[str] = []
    for folder, files in folders.items():
        present = _present(folder)
        for path, content in sorted(files.items()):
            where = path.relative_to(ROOT)
            if path not in present:
                problems.append(f"missing: {where}")
            elif path.read_bytes() != content:
                problems.append(f"differs: {where}")
        problems.extend(f"unlisted: {path.relative_to(ROOT)}" for path in sorted(present - set(files)))
    return problems


def write(folders: dict[Path, dict[Path, bytes]]) -> None:
    """Write the copies and manifests, and delete files a version bump left behind.

    Old versioned names are removed so that the folder holds exactly what its manifest lists,
    which is what the unit test and ``--check`` require.
    """
    for folder, files in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for stale in _present(folder) - set(files):
            stale.unlink()
        for path, content in files.items():
            path.write_bytes(content)


def main(argv: list[str] | None = None) -> int:
    """Vendor the assets, or with ``--check`` report drift; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing every vendored file or manifest that differs from node_modules",
    )
    args = parser.parse_args(argv)
    try:
        folders = expected_files()
    except VendorError as exc:
        print(f"vendor_assets: {exc}", file=sys.stderr)
        return 2
    if args.check:
        problems = drift(folders)
        if problems:
            print("vendor_assets: the vendored files do not match node_modules:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            print("run `python scripts/vendor_assets.py` and commit the result", file=sys.stderr)
            return 1
        print("vendor_assets: the vendored files match node_modules")
        return 0
    write(folders)
    for files in folders.values():
        for path in sorted(files):
            print(f"{path.relative_to(ROOT)} ({len(files[path])} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
