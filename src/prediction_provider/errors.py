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


class ModelUnloaded(PredictionProviderError):
    """An operator unloaded this model name (the model repository API); it serves again after a load."""

    code = "model_unloaded"


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


class UnknownQueryParameter(InvalidInput):
    """A query parameter the route does not take (422): refused, never silently ignored, so that a
    misspelt filter or a paging style the route does not speak cannot quietly change the answer.
    The code is the one every other invalid query parameter gets."""

    code = "validation_error"


class RateLimited(PredictionProviderError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, details: object = None) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class JobNotFound(PredictionProviderError):
    """Unknown job id, or one the caller may not see (the two are not told apart)."""

    code = "job_not_found"


class JobStateConflict(Conflict):
    """The job is no longer in a state that allows the change (e.g. editing a started job)."""

    code = "job_state_conflict"


class BrokerUnavailable(PredictionProviderError):
    """The task broker did not accept the job; nothing was stored."""

    code = "broker_unavailable"


class DatasetNotFound(PredictionProviderError):
    code = "dataset_not_found"


class PrecomputedNotFound(PredictionProviderError):
    code = "precomputed_not_found"


class UnknownSymbol(PredictionProviderError):
    """No market data or decision models for a symbol."""

    code = "unknown_symbol"


class UnknownStrategy(PredictionProviderError):
    """A ``strategy_override`` that names no strategy; ``details`` lists the known ones."""

    code = "unknown_strategy"


class TradingAccountNotFound(PredictionProviderError):
    """No such trading account, or one the caller may not see (the two are not told apart)."""

    code = "account_not_found"


class InvalidDatetime(PredictionProviderError):
    """A datetime in a format the route does not read; the message names the accepted formats (400)."""

    code = "invalid_datetime"


class UnknownDirection(PredictionProviderError):
    """A trade direction other than buy or sell (400); ``details`` lists the accepted ones."""

    code = "unknown_direction"


class InvalidMarketData(PredictionProviderError):
    """Bars a feeder cannot serve as they are: duplicate times, gaps over the allowed one, unparseable
    times or prices. ``details`` names the offending rows or gaps."""

    code = "invalid_market_data"


class ExplanationUnsupported(InvalidInput):
    """``explain: true`` for a model whose framework cannot attribute its output to features (422):
    TreeSHAP needs the trees, which an ONNX graph or a pyfunc does not expose."""

    code = "explanation_unsupported"


class InsufficientHistory(InvalidInput):
    """A point-in-time request before the first bar with enough history for every feature."""

    code = "insufficient_history"


class FeederUnavailable(PredictionProviderError):
    """The configured bar feeder cannot serve: no such plugin, a missing optional package, or
    incomplete settings."""

    code = "feeder_unavailable"


class PipelineUnavailable(PredictionProviderError):
    """No feature pipeline plugin by that name, or one that cannot be imported."""

    code = "pipeline_unavailable"


class NoiseUnsupported(Conflict):
    """``set_noise`` or the noise metrics asked of a signal predictor that takes no noise (409);
    ``details`` names the predictor serving and the ones that do take it."""

    code = "noise_unsupported"


class RoleChangeForbidden(PermissionDenied):
    """A user's own profile edit that names a role (403): only an admin changes roles."""

    code = "role_change_forbidden"


class DecisionNotFound(PredictionProviderError):
    """No recorded trading decision with this id, or one the caller may not see (not told apart)."""

    code = "decision_not_found"


class PaymentRequired(PredictionProviderError):
    """Money stops the request (HTTP 402): ``code`` says which rule, ``details`` the amounts."""

    code = "payment_required"


class InsufficientFunds(PaymentRequired):
    code = "insufficient_funds"


class MaxCostExceeded(PaymentRequired):
    code = "max_cost_exceeded"


class SpendingLimitExceeded(PaymentRequired):
    code = "spending_limit_exceeded"


class LedgerConflict(Conflict):
    """A transfer id already used for a different transfer, or a hold already resolved."""

    code = "ledger_conflict"


class MarketNotFound(PredictionProviderError):
    """An offer, quote, request, claim or webhook that does not exist or is not the caller's."""

    code = "not_found"


class IdempotencyKeyMissing(PredictionProviderError):
    code = "idempotency_key_missing"


class TooLate(Conflict):
    """A result after the request's deadline: by then it could already know the outcome."""

    code = "too_late"


class UnsafeModelFormat(InvalidInput):
    """An uploaded model file that is not the safe format it claims (ONNX, LightGBM text, XGBoost
    JSON): pickles, joblib dumps, archives and anything else are refused from their bytes (422)."""

    code = "unsafe_model_format"


class InvalidModelFile(InvalidInput):
    """An upload in a safe format that its framework, or the loader that would serve it, cannot
    read or run (422): nothing is registered."""

    code = "invalid_model_file"


class ModelFileTooLarge(BatchTooLarge):
    code = "payload_too_large"


class ModelNameTaken(Conflict):
    """An upload under a model name that exists and is not the uploader's (409)."""

    code = "model_name_taken"


class IdempotencyKeyInvalid(InvalidInput):
    """An Idempotency-Key header that is empty, over 255 characters or not printable ASCII (422)."""

    code = "idempotency_key_invalid"


class IdempotencyKeyReused(InvalidInput):
    """The key's first request had another method, path or body (422): almost always a client bug,
    so it is refused rather than answered with the other request's response."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    """The key's first request is still being answered (409); retry once it has finished."""

    code = "idempotency_in_progress"


class PredictionNotFound(PredictionProviderError):
    """Unknown prediction id, or one the caller may not see (the two are not told apart)."""

    code = "prediction_not_found"


class ExperimentNotFound(ModelNotFound):
    """No experiment of that name (404)."""

    code = "experiment_not_found"


class ExperimentConflict(Conflict):
    """The experiment's state does not allow the change, the name is taken, or the model already
    has a running experiment (409)."""

    code = "experiment_conflict"


class InvalidExperiment(InvalidInput):
    """Targets that do not exist, or variants whose classes or features differ (422)."""

    code = "invalid_experiment"


class ModelUnavailable(PredictionProviderError):
    """The model was not called (503): its circuit breaker is open (``reason="circuit_open"``,
    ``retry_after_s`` until the next probe) or its bulkhead is full (``reason="rejected"``)."""

    code = "model_unavailable"

    def __init__(self, message: str, reason: str, retry_after_s: float = 0.0, details: object = None) -> None:
        super().__init__(message, details)
        self.reason = reason
        self.retry_after_s = retry_after_s


class ModelTimeout(PredictionProviderError):
    """The model missed its deadline (504); its late answer is discarded."""

    code = "model_timeout"
    reason = "timeout"


class DriftDisabled(Conflict):
    """Drift monitoring is off in this server (``PP_DRIFT=false``): 409."""

    code = "drift_disabled"


class EnsembleNotFound(ModelNotFound):
    """No ensemble of that name (404)."""

    code = "ensemble_not_found"


class EnsembleConflict(Conflict):
    """The ensemble's name is taken by another ensemble or by a registered model (409)."""

    code = "ensemble_conflict"


class InvalidEnsemble(InvalidInput):
    """Members that do not exist or do not agree (classes, task, method), or a stacking meta
    model whose inputs are not the members' columns (422); ``details`` lists ``{"field", "error"}``."""

    code = "invalid_ensemble"
