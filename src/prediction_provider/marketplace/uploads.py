"""A provider's model upload: checked, saved as an MLflow model, registered, owned by its uploader.

The upload is parsed by ``safe_formats`` (never unpickled), written back by the framework's own
MLflow flavor into a staging directory, and loaded there by the very loader that will serve it,
with no trusted roots at all: a model that could not answer ``/predict`` is refused before anything
is registered. Only then is the name claimed (``ModelOwnership.claim``: 409 when it is someone
else's) and a version registered. Artifacts land under ``data_dir/provider-models``, which is
deliberately not a trusted model root: no loader that can run code ever opens what a provider sent.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from prediction_provider.accounts.principal import Principal
from prediction_provider.config import Settings
from prediction_provider.errors import InvalidInput, InvalidModelFile, ModelFileTooLarge
from prediction_provider.marketplace.ownership import ModelOwnership
from prediction_provider.marketplace.safe_formats import ParsedModel, check_feature_names, parse_model_file
from prediction_provider.serving.loaders import ModelLoader, discover_loaders, load_model, open_source
from prediction_provider.serving.references import NAME_PATTERN
from prediction_provider.serving.registry import ModelRegistry

log = logging.getLogger(__name__)

UPLOADS_EXPERIMENT = "provider-uploads"
UPLOADS_DIR = "provider-models"
MODEL_ARTIFACT = "model"
PIP_REQUIREMENTS = {"lightgbm": ["lightgbm"], "xgboost": ["xgboost"], "onnx": ["onnx", "onnxruntime"]}
REMOTE_SCHEMES = ("http", "https", "databricks")


@dataclass(frozen=True, slots=True)
class ModelUpload:
    """What a provider sends: a name, a declared format, the file, and optional signature parts."""

    name: str
    format: str
    content: bytes
    features: list[str] | None = None
    classes: list[str] | None = None


@dataclass(frozen=True, slots=True)
class UploadedModel:
    model: str
    version: str
    uri: str
    format: str
    features: list[str]
    classes: list[str] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "uri": self.uri,
            "format": self.format,
            "features": self.features,
            "classes": self.classes,
        }


class ModelUploads:
    """Registers providers' uploads in the MLflow registry; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        ownership: ModelOwnership,
        loaders: Sequence[ModelLoader] | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._ownership = ownership
        self._loaders = tuple(loaders) if loaders is not None else discover_loaders()
        self.root = (settings.data_dir / UPLOADS_DIR).resolve()
        self._experiment_lock = threading.Lock()
        self._experiment_id: str | None = None

    def upload(self, provider: Principal, upload: ModelUpload) -> UploadedModel:
        """Check, register and own ``upload``; blocking (call it off the event loop).

        422 ``unsafe_model_format`` / ``invalid_model_file`` / ``invalid_input``, 413 over
        ``max_upload_bytes``, 409 ``model_name_taken``. Nothing is registered or owned on failure.
        """
        assert provider.user_id is not None, "uploads need a signed-in provider"
        self._check_request(upload)
        parsed = parse_model_file(upload.format, upload.content)
        features = check_feature_names(self._features(parsed, upload), parsed.width)
        classes = upload.classes or parsed.metadata_classes
        digest = hashlib.sha256(upload.content).hexdigest()
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=self.root) as staging:
            model_dir = Path(staging) / MODEL_ARTIFACT
            _save_mlflow_model(parsed, model_dir, features, classes)
            self._check_servable(model_dir, features)
            claimed = self._ownership.claim(upload.name, provider)
            try:
                version = self._register(provider, upload, parsed, model_dir, digest)
            except BaseException:
                if claimed:
                    self._ownership.release(upload.name, provider.user_id)
                raise
        log.info("%s uploaded %s/%s (%s)", provider.username, upload.name, version, upload.format)
        return UploadedModel(
            upload.name, version, f"models:/{upload.name}/{version}", upload.format, features, classes
        )

    def _check_request(self, upload: ModelUpload) -> None:
        if len(upload.content) > self._settings.max_upload_bytes:
            raise ModelFileTooLarge(
                f"the model file exceeds {self._settings.max_upload_bytes} bytes",
                {"max_upload_bytes": self._settings.max_upload_bytes},
            )
        if not NAME_PATTERN.match(upload.name):
            raise InvalidInput(
                f"invalid model name {upload.name!r}",
                [{"field": "name", "error": "1-128 letters, digits, '.', '_' or '-', starting alphanumeric"}],
            )
        if not upload.content:
            raise InvalidInput("the model file is empty", [{"field": "file", "error": "empty"}])

    @staticmethod
    def _features(parsed: ParsedModel, upload: ModelUpload) -> list[str]:
        if upload.features:
            return list(upload.features)
        if parsed.native_features:
            return parsed.native_features
        raise InvalidModelFile(
            "the model file does not name its features: send them in the 'features' field",
            [{"field": "features", "error": f"required: {parsed.width} names in the model's input order"}],
        )

    def _check_servable(self, model_dir: Path, features: list[str]) -> None:
        """Load the saved model as ``/predict`` will, trusting no directory, and predict a row."""
        try:
            model, _ = load_model(open_source(model_dir, 1), self._loaders, trusted_roots=())
            if list(model.signature.feature_names) != features:
                raise ValueError(f"the loader reads features {list(model.signature.feature_names)}")
            model.predict(np.zeros((1, len(features)), dtype=np.float64))
            model.unload()
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise InvalidModelFile(
                f"the model cannot be served: {type(cause).__name__}: {cause}", {"format": "serving"}
            ) from exc

    def _register(
        self, provider: Principal, upload: ModelUpload, parsed: ParsedModel, model_dir: Path, digest: str
    ) -> str:
        from mlflow.exceptions import MlflowException

        client = self._registry.client
        tags = {"format": upload.format, "framework": parsed.framework, "uploaded_by": str(provider.username)}
        run = client.create_run(
            self._experiment(), run_name=f"{upload.name}-upload", tags={**tags, "sha256": digest}
        )
        run_id = run.info.run_id
        try:
            client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
        try:
            client.create_registered_model(
                upload.name, tags={"uploaded_by": str(provider.username)},
                description=f"Uploaded by {provider.username} ({upload.format})",
            )  # fmt: skip
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}"
        version = client.create_model_version(
            upload.name, source=source, run_id=run_id, tags={**tags, "sha256": digest}
        )
        return str(version.version)

    def _experiment(self) -> str:
        """The uploads' experiment, its artifacts under ``root`` when the tracking store is local."""
        from mlflow.exceptions import MlflowException

        with self._experiment_lock:
            if self._experiment_id is not None:
                return self._experiment_id
            client = self._registry.client
            found = client.get_experiment_by_name(UPLOADS_EXPERIMENT)
            if found is None:
                remote = urlparse(self._registry.tracking_uri).scheme in REMOTE_SCHEMES
                location = None if remote else self.root.as_uri()
                try:
                    self._experiment_id = client.create_experiment(UPLOADS_EXPERIMENT, location)
                except MlflowException:  # another process created it first
                    found = client.get_experiment_by_name(UPLOADS_EXPERIMENT)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = str(found.experiment_id)
            assert self._experiment_id is not None
            return self._experiment_id


def _save_mlflow_model(
    parsed: ParsedModel, path: Path, features: list[str], classes: list[str] | None
) -> None:
    """The model written back by its MLflow flavor, as demo.training logs the demo models."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    signature = infer_signature(pd.DataFrame(np.zeros((1, len(features))), columns=features))
    metadata: dict[str, Any] = {"feature_names": features}
    if classes:
        metadata["class_labels"] = classes
    common: dict[str, Any] = {
        "signature": signature,
        "metadata": metadata,
        "pip_requirements": PIP_REQUIREMENTS[parsed.framework],
    }
    try:
        if parsed.framework == "lightgbm":
            mlflow.lightgbm.save_model(parsed.model, str(path), **common)
        elif parsed.framework == "xgboost":
            mlflow.xgboost.save_model(parsed.model, str(path), model_format="json", **common)
        else:
            mlflow.onnx.save_model(parsed.model, str(path), save_as_external_data=False, **common)
    except Exception as exc:
        raise InvalidModelFile(
            f"the model cannot be saved: {type(exc).__name__}: {exc}", {"format": parsed.format}
        ) from exc
