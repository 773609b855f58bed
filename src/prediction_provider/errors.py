"""The service layer's exceptions; ``api.errors`` maps them to HTTP in one place."""

from __future__ import annotations

from typing import Any


class PredictionProviderError(Exception):
    """Base of every error a caller can be told about.

    ``code`` is a stable machine-readable identifier; ``details`` carries
    structured context (offending fields, limits) for the error body.
    """

    code = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidModelReference(PredictionProviderError):
    code = "invalid_model_reference"


class ModelNotFound(PredictionProviderError):
    code = "model_not_found"


class UntrustedModelPath(PredictionProviderError):
    code = "untrusted_model_path"


class ModelLoadFailed(PredictionProviderError):
    code = "model_load_failed"


class UnsupportedModelFormat(ModelLoadFailed):
    code = "unsupported_model_format"


class RegistryUnavailable(PredictionProviderError):
    code = "registry_unavailable"


class InvalidFeatures(PredictionProviderError):
    """``details`` is a list of ``{"field", "error"}`` entries, one per offending field."""

    code = "invalid_features"


class BatchTooLarge(PredictionProviderError):
    code = "batch_too_large"


class PredictionFailed(PredictionProviderError):
    code = "prediction_failed"


class InvalidTensor(PredictionProviderError):
    """A protocol tensor whose header, shape or data is malformed."""

    code = "invalid_tensor"


class AuthenticationFailed(PredictionProviderError):
    """No valid credentials: a missing, unknown, revoked or expired key or token."""

    code = "unauthorized"


class PermissionDenied(PredictionProviderError):
    code = "forbidden"


class AccountInactive(PermissionDenied):
    code = "account_inactive"


class UserNotFound(PredictionProviderError):
    code = "user_not_found"


class Conflict(PredictionProviderError):
    code = "conflict"


class InvalidInput(PredictionProviderError):
    """``details`` lists ``{"field", "error"}`` entries."""

    code = "invalid_input"


class RateLimited(PredictionProviderError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, details: object = None) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after
