"""Parsing of the model references a caller may send.

``runs:/<run_id>/<path>``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
``models:/<name>/latest`` (the highest version number, as MLflow means it),
``file:///abs/path`` and a bare ``<name>`` (its ``champion`` alias, else its
latest version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlparse

from prediction_provider.errors import InvalidModelReference

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,64}$")
MAX_REFERENCE_LENGTH = 512
# MLflow versions are integers; more digits than this cannot exist and overflow database integers.
MAX_VERSION_DIGITS = 9


def is_version_number(text: str) -> bool:
    return text.isdigit() and len(text) <= MAX_VERSION_DIGITS


class ReferenceKind(StrEnum):
    RUN = "run"
    VERSION = "version"
    ALIAS = "alias"
    LATEST = "latest"
    FILE = "file"
    NAME = "name"


@dataclass(frozen=True, slots=True)
class ModelReference:
    kind: ReferenceKind
    raw: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    path: Path | None = None

    @property
    def label(self) -> str:
        """The model this names, without any file or artifact path: safe to show anyone."""
        if self.kind is ReferenceKind.VERSION:
            return f"{self.name}/{self.version}"
        if self.kind is ReferenceKind.ALIAS:
            return f"{self.name}@{self.alias}"
        if self.kind is ReferenceKind.LATEST:
            return f"{self.name}/latest"
        if self.kind is ReferenceKind.FILE:
            return self.path.stem if self.path is not None else "file"
        if self.kind is ReferenceKind.RUN:
            return (self.artifact_path or "model").rsplit("/", 1)[-1]
        return str(self.name)

    @property
    def is_moving(self) -> bool:
        """Aliases, ``latest`` and bare names can point elsewhere later; versions and runs cannot."""
        return self.kind in (ReferenceKind.ALIAS, ReferenceKind.LATEST, ReferenceKind.NAME)


def _check_name(name: str, raw: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidModelReference(
            f"invalid model name {name!r} in {raw!r}",
            {"reference": raw, "expected": NAME_PATTERN.pattern},
        )
    return name


def parse_model_reference(raw: str) -> ModelReference:
    """Parse and validate ``raw``; raise ``InvalidModelReference`` when it is malformed."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_REFERENCE_LENGTH:
        raise InvalidModelReference(
            f"a model reference is a non-empty string of at most {MAX_REFERENCE_LENGTH} characters",
            {"reference": raw if isinstance(raw, str) else None},
        )
    if raw.startswith("models:/"):
        return _parse_models_uri(raw)
    if raw.startswith("runs:/"):
        return _parse_runs_uri(raw)
    if raw.startswith("file:"):
        return _parse_file_uri(raw)
    if "/" in raw or ":" in raw:
        raise InvalidModelReference(
            f"unsupported model reference {raw!r}; use runs:/, models:/, file:// or a name",
            {"reference": raw},
        )
    return ModelReference(ReferenceKind.NAME, raw, name=_check_name(raw, raw))


def _parse_models_uri(raw: str) -> ModelReference:
    body = raw[len("models:/") :]
    if "@" in body:
        name, alias = body.split("@", 1)
        if not ALIAS_PATTERN.match(alias):
            raise InvalidModelReference(f"invalid alias {alias!r} in {raw!r}", {"reference": raw})
        return ModelReference(ReferenceKind.ALIAS, raw, name=_check_name(name, raw), alias=alias)
    parts = body.split("/")
    if len(parts) == 2 and is_version_number(parts[1]):
        return ModelReference(ReferenceKind.VERSION, raw, name=_check_name(parts[0], raw), version=parts[1])
    if len(parts) == 2 and parts[1].lower() == "latest":
        # MLflow's meaning: the newest version whatever its aliases, not the champion.
        return ModelReference(ReferenceKind.LATEST, raw, name=_check_name(parts[0], raw))
    raise InvalidModelReference(
        f"expected models:/<name>/<version> or models:/<name>@<alias>, got {raw!r}",
        {"reference": raw},
    )


def _parse_runs_uri(raw: str) -> ModelReference:
    run_id, _, artifact_path = raw[len("runs:/") :].partition("/")
    artifact_path = artifact_path.strip("/")
    if not RUN_ID_PATTERN.match(run_id) or not artifact_path or ".." in artifact_path.split("/"):
        raise InvalidModelReference(
            f"expected runs:/<run_id>/<artifact_path>, got {raw!r}", {"reference": raw}
        )
    return ModelReference(ReferenceKind.RUN, raw, run_id=run_id, artifact_path=artifact_path)


def _parse_file_uri(raw: str) -> ModelReference:
    parsed = urlparse(raw)
    if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise InvalidModelReference(f"expected file:///absolute/path, got {raw!r}", {"reference": raw})
    return ModelReference(ReferenceKind.FILE, raw, path=Path(unquote(parsed.path)))
