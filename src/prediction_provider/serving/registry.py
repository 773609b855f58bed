"""Resolution of model references against MLflow, and the catalogue behind ``/models``.

Any MLflow tracking URI works. Artifacts on local disk are read where they
lie; artifacts in a remote store are downloaded once under ``downloads_dir``,
which is not a trusted root, so pickled models from remote stores are refused
unless an operator trusts that directory explicitly.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from prediction_provider.config import Settings
from prediction_provider.errors import ModelNotFound, RegistryUnavailable
from prediction_provider.serving.references import ModelReference, ReferenceKind
from prediction_provider.serving.trust import require_trusted

CHAMPION_ALIAS = "champion"
MLMODEL_FILE = "MLmodel"
FINISHED_RUNS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A reference pinned to one immutable artifact: the cache key is ``uri``."""

    name: str
    version: str | None
    uri: str
    location: Path
    run_id: str | None = None

    @property
    def label(self) -> str:
        """``name/version``, or the name alone: what callers without operator rights are shown."""
        return f"{self.name}/{self.version}" if self.version else self.name


def _model_entry(registered: Any, versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": registered.name,
        "description": registered.description or None,
        "aliases": {k: str(v) for k, v in (registered.aliases or {}).items()},
        "tags": dict(registered.tags or {}),
        "latest_version": versions[0]["version"] if versions else None,
        "versions": versions,
    }


def _is_missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def _local_path(artifact_uri: str) -> Path | None:
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


class ModelRegistry:
    """The MLflow tracking/registry store, seen as a catalogue of servable models."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.tracking_uri = settings.tracking_uri
        self._download_lock = threading.Lock()
        # Runs that have ended, by id: their metrics, params and tags no longer change, and reading
        # one from MLflow took ~11 ms, most of a catalogue page. Bounded; running runs are re-read.
        self._finished_runs: OrderedDict[str, Any] = OrderedDict()
        self.client = MlflowClient(
            tracking_uri=self.tracking_uri,
            registry_uri=settings.mlflow_registry_uri or self.tracking_uri,
        )

    # -- resolution -----------------------------------------------------------------

    def resolve(self, ref: ModelReference) -> ResolvedModel:
        """Pin ``ref`` to a concrete version and local path; raise ``ModelNotFound`` if absent."""
        try:
            if ref.kind is ReferenceKind.FILE:
                return self._resolve_file(ref)
            if ref.kind is ReferenceKind.RUN:
                return self._resolve_run(ref)
            return self._resolve_version(ref)
        except MlflowException as exc:
            if _is_missing(exc):
                raise ModelNotFound(f"model {ref.raw!r} not found", {"model": ref.raw}) from exc
            raise RegistryUnavailable(f"model registry error: {exc.message}") from exc
        except (OSError, ConnectionError) as exc:
            raise RegistryUnavailable(f"model registry unreachable: {exc}") from exc

    def _resolve_version(self, ref: ModelReference) -> ResolvedModel:
        assert ref.name is not None
        if ref.kind is ReferenceKind.VERSION:
            assert ref.version is not None
            version = self.client.get_model_version(ref.name, ref.version)
        elif ref.kind is ReferenceKind.LATEST:
            version = self._latest_version(ref)
        else:
            version = self._version_for_alias(ref)
        label = f"{version.name}/{version.version}"
        if not version.source:
            raise ModelNotFound(f"model version {label} has no source", {"model": ref.raw})
        location = self._materialize(self._source_uri(version.source), label)
        return ResolvedModel(
            name=str(version.name),
            version=str(version.version),
            uri=f"models:/{version.name}/{version.version}",
            location=location,
            run_id=version.run_id,
        )

    def _version_for_alias(self, ref: ModelReference) -> Any:
        assert ref.name is not None
        registered = self.client.get_registered_model(ref.name)
        aliases = dict(registered.aliases or {})
        alias = ref.alias if ref.kind is ReferenceKind.ALIAS else CHAMPION_ALIAS
        if alias in aliases:
            return self.client.get_model_version(ref.name, str(aliases[alias]))
        if ref.kind is ReferenceKind.ALIAS:
            raise ModelNotFound(
                f"model {ref.name!r} has no alias {ref.alias!r}",
                {"model": ref.raw, "aliases": sorted(aliases)},
            )
        return self._latest_version(ref)

    def _latest_version(self, ref: ModelReference) -> Any:
        """The highest version number, whatever its aliases: ``models:/<name>/latest`` in MLflow."""
        assert ref.name is not None
        versions = self.client.search_model_versions(f"name = '{ref.name}'")
        if not versions:
            # An unknown name and a name without versions are both "not found" to the caller.
            raise ModelNotFound(f"model {ref.name!r} has no versions", {"model": ref.raw})
        return max(versions, key=lambda v: int(v.version))

    def _resolve_file(self, ref: ModelReference) -> ResolvedModel:
        assert ref.path is not None
        require_trusted(ref.path, self._settings.trusted_roots, "file:// models")
        if not ref.path.exists():
            raise ModelNotFound(f"no model at {ref.raw}", {"model": ref.raw})
        path = ref.path.resolve()
        return ResolvedModel(name=path.stem, version=None, uri=path.as_uri(), location=path)

    def _resolve_run(self, ref: ModelReference) -> ResolvedModel:
        assert ref.run_id is not None
        assert ref.artifact_path is not None
        run = self.client.get_run(ref.run_id)
        artifact_uri = f"{run.info.artifact_uri.rstrip('/')}/{ref.artifact_path}"
        local = _local_path(artifact_uri)
        if local is None or not (local / MLMODEL_FILE).exists():
            # MLflow 3 stores logged models apart from the run's artifacts.
            logged = self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{ref.run_id}' AND name = '{ref.artifact_path}'",
                max_results=1,
            )
            if logged:
                artifact_uri = logged[0].artifact_location
            elif local is not None:
                raise ModelNotFound(f"run has no model at {ref.raw}", {"model": ref.raw})
        location = self._materialize(artifact_uri, f"runs/{ref.run_id}/{ref.artifact_path}")
        return ResolvedModel(
            name=ref.artifact_path,
            version=None,
            uri=f"runs:/{ref.run_id}/{ref.artifact_path}",
            location=location,
            run_id=ref.run_id,
        )

    def _source_uri(self, source: str) -> str:
        """A model version's source as an artifact URI (MLflow 3 points at logged models)."""
        if source.startswith("models:/m-"):
            return str(self.client.get_logged_model(source[len("models:/") :]).artifact_location)
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            return f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
        return source

    def _materialize(self, artifact_uri: str, label: str) -> Path:
        local = _local_path(artifact_uri)
        if local is not None:
            if not local.exists():
                raise ModelNotFound(f"artifacts of {label} are missing", {"model": label})
            return local
        target = self._settings.downloads_dir / hashlib.sha256(artifact_uri.encode()).hexdigest()[:32]
        done_marker = target / ".complete"
        with self._download_lock:  # two first requests must not download into one folder at once
            if not done_marker.exists():
                import mlflow.artifacts

                target.mkdir(parents=True, exist_ok=True)
                mlflow.artifacts.download_artifacts(
                    artifact_uri=artifact_uri, dst_path=str(target), tracking_uri=self.tracking_uri
                )
                done_marker.touch()
        entries = [p for p in target.iterdir() if p.name != ".complete"]
        return entries[0] if len(entries) == 1 else target

    # -- catalogue ------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            self.client.search_registered_models(max_results=1)
        except Exception:  # noqa: BLE001 - any failure means "not connected"
            return False
        return True

    def list_models(self, experiment_name: str | None, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` models by name (of the experiment's, when one is named)."""
        return self.page_models(experiment_name, limit, 0)[0]

    def page_models(
        self, experiment_name: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Registered models by name with their versions, ``limit`` from ``offset``, and how many
        there are in all. Only the page's versions are described, unless an experiment filter
        needs every model's versions to know which match."""
        experiment_id = None
        if experiment_name:
            experiment = self.client.get_experiment_by_name(experiment_name)
            if experiment is None:
                return [], 0
            experiment_id = experiment.experiment_id
        registered_models = self._registered_models()
        runs: dict[str, Any] = {}
        if experiment_id is None:
            page = registered_models[offset : offset + limit]
            return [_model_entry(r, self.versions(r.name, runs, r)) for r in page], len(registered_models)
        matching = []
        for registered in registered_models:
            versions = self.versions(registered.name, runs, registered)
            versions = [v for v in versions if v.get("experiment_id") == experiment_id]
            if versions:
                matching.append(_model_entry(registered, versions))
        return matching[offset : offset + limit], len(matching)

    def search_models(
        self, text: str | None, only: Collection[str] | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """``page_models`` narrowed to names containing ``text`` (case-insensitive) and, when
        ``only`` is given, to those names (a provider's own); only the page's versions are read."""
        needle = (text or "").lower()
        matching = [
            registered
            for registered in self._registered_models()
            if needle in str(registered.name).lower() and (only is None or registered.name in only)
        ]
        runs: dict[str, Any] = {}
        page = matching[offset : offset + limit]
        return [_model_entry(r, self.versions(r.name, runs, r)) for r in page], len(matching)

    def tagged_models(self, key: str, value: str) -> dict[str, dict[str, str]]:
        """Registered models whose tag ``key`` is ``value``, by name, with all their tags."""
        found: dict[str, dict[str, str]] = {}
        token: str | None = None
        try:
            while True:
                page = self.client.search_registered_models(
                    filter_string=f"tags.`{key}` = '{value}'", max_results=1000, page_token=token
                )
                found.update({str(model.name): dict(model.tags or {}) for model in page})
                token = page.token
                if not token:
                    return found
        except MlflowException as exc:
            raise RegistryUnavailable(f"model registry error: {exc.message}") from exc
        except (OSError, ConnectionError) as exc:
            raise RegistryUnavailable(f"model registry unreachable: {exc}") from exc

    def _registered_models(self) -> list[Any]:
        """Every registered model, by name, through MLflow's pages."""
        found: list[Any] = []
        token: str | None = None
        while True:
            page = self.client.search_registered_models(
                max_results=1000, order_by=["name ASC"], page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                return found

    def versions(
        self, name: str, runs: dict[str, Any] | None = None, registered: Any = None
    ) -> list[dict[str, Any]]:
        """Versions of ``name``, newest first, with their run's metrics, params and tags
        (``registered``: the model as a search just listed it, aliases included, not read again)."""
        runs = {} if runs is None else runs
        try:
            registered = registered if registered is not None else self.client.get_registered_model(name)
        except MlflowException as exc:
            if _is_missing(exc):
                raise ModelNotFound(f"model {name!r} not found", {"model": name}) from exc
            raise RegistryUnavailable(f"model registry error: {exc.message}") from exc
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in (registered.aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
        found = self.client.search_model_versions(f"name = '{name}'")
        described = []
        for version in sorted(found, key=lambda v: int(v.version), reverse=True):
            run = self._run(version.run_id, runs)
            described.append(
                {
                    "version": str(version.version),
                    "uri": f"models:/{name}/{version.version}",
                    "aliases": sorted(aliases_by_version.get(str(version.version), [])),
                    "status": version.status,
                    "run_id": version.run_id,
                    "experiment_id": run.info.experiment_id if run else None,
                    "created_at": version.creation_timestamp,
                    "tags": dict(version.tags or {}),
                    "metrics": dict(run.data.metrics) if run else {},
                    "params": dict(run.data.params) if run else {},
                    "run_tags": {
                        k: v for k, v in (run.data.tags if run else {}).items() if not k.startswith("mlflow.")
                    },
                }
            )
        return described

    def _run(self, run_id: str | None, runs: dict[str, Any]) -> Any:
        if not run_id:
            return None
        if run_id not in runs:
            finished = self._finished_runs.get(run_id)
            if finished is not None:
                runs[run_id] = finished
                return finished
            try:
                runs[run_id] = run = self.client.get_run(run_id)
            except MlflowException:
                runs[run_id] = None
            else:
                if run.info.status in ("FINISHED", "FAILED", "KILLED"):
                    self._finished_runs[run_id] = run
                    while len(self._finished_runs) > FINISHED_RUNS_KEPT:
                        self._finished_runs.popitem(last=False)
        return runs[run_id]
