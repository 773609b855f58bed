"""Request and response bodies of the native REST API, named for their role."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

ModelField = Field(
    min_length=1,
    max_length=512,
    description="runs:/<run_id>/<path>, models:/<name>/<version>, models:/<name>@<alias>, "
    "file:///abs/path, or a registered name (its champion alias, else its latest version).",
    examples=["eurusd-direction"],
)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ROWS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}},
        {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}},
    ]
}
FEATURES_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "number"}}
# One default on every route that takes it (single rows, batches, jobs, /predict/async): a
# classifier's answer carries its class distribution unless the caller opts out.
ReturnProbaField = Field(
    default=True, description="Include every class's probability (classifiers). False leaves them out."
)
ExplainField = Field(
    default=False,
    description="Add per-feature contributions to the predicted class's raw score (TreeSHAP; LightGBM, "
    "XGBoost and scikit-learn tree models, 422 for others).",
)


class OperationsOptions(BaseModel):
    """Request fields of model operations, on single rows and batches alike."""

    model_config = ConfigDict(extra="forbid")

    outcome_key: str | None = Field(
        default=None,
        max_length=128,
        description="Names the event this answer is about (e.g. EURUSD:2026-11-20T13:00Z): answers sharing "
        "a key are one outcome in experiment results. Also read from the X-PP-Outcome-Key header.",
    )
    return_members: bool = Field(default=False, description="Ensembles: add each member's answer.")


class PredictRequest(OperationsOptions):
    model_config = ConfigDict(extra="forbid")

    model: str = ModelField
    features: Annotated[dict[str, Any], WithJsonSchema(FEATURES_SCHEMA)] = Field(
        description="One value per feature of the model's signature."
    )
    return_proba: bool = ReturnProbaField
    explain: bool = ExplainField


class PredictBatchRequest(OperationsOptions):
    model_config = ConfigDict(extra="forbid")

    model: str = ModelField
    # Rows are checked one by one in serving.features_input, which names each bad
    # row; typing them here would walk every value a second time.
    features_list: Annotated[list[Any] | dict[str, Any], WithJsonSchema(ROWS_SCHEMA)] = Field(
        description="Rows as a list of {feature: value} objects, or columns as {feature: [values]}."
    )
    return_proba: bool = ReturnProbaField
    explain: bool = ExplainField


class ExperimentTag(BaseModel):
    name: str
    variant: str


class ModelIdentity(BaseModel):
    name: str
    version: str | None
    uri: str


class FeatureExplanation(BaseModel):
    """The shape of a trading decision's ``explanation``: ``base_value + sum(contributions)`` is the
    predicted class's raw score (a boosted model's margin, a forest's probability)."""

    model_config = ConfigDict(populate_by_name=True)

    model: str = Field(description="name/version of the model explained.")
    class_: str | None = Field(alias="class", description="The predicted class (null for regressors).")
    base_value: float = Field(description="The model's expected raw score over its training data.")
    contributions: dict[str, float]
    method: str


class ServedFields(BaseModel):
    """What an answer says about who served it (model operations)."""

    experiment: ExperimentTag | None = Field(
        default=None, description="The experiment and variant that answered."
    )
    served_by: Literal["fallback"] | None = Field(
        default=None, description="Present when a fallback answered."
    )
    fallback_reason: str | None = Field(
        default=None, description="error, timeout, rejected, circuit_open, not_loaded."
    )
    fallback_target: str | None = None
    ensemble: dict[str, Any] | None = Field(
        default=None, description="Ensembles: members_used (and members)."
    )


class PredictResponse(ServedFields):
    prediction: str | float | int
    probability: float | None = Field(description="Probability of the predicted class.")
    probabilities: dict[str, float] | None
    confidence: Literal["high", "medium", "low"] | None
    model: ModelIdentity
    latency_ms: float
    explanation: FeatureExplanation | None = Field(default=None, description="Only with explain: true.")


class PredictBatchResponse(ServedFields):
    predictions: list[str | float | int]
    probabilities: list[dict[str, float]] | None
    count: int
    model: ModelIdentity
    latency_ms: float
    explanations: list[FeatureExplanation] | None = Field(
        default=None, description="One per row, only with explain: true."
    )


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    registry_connected: bool
    gpu_available: bool
    cached_models: int
    cache: dict[str, int]
    version: str


class ProbeResponse(BaseModel):
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


class ModelVersionPublic(BaseModel):
    version: str
    uri: str
    aliases: list[str]
    status: str | None
    run_id: str | None
    experiment_id: str | None
    created_at: int | None
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    run_tags: dict[str, str]


class RegisteredModelPublic(BaseModel):
    name: str
    description: str | None
    aliases: dict[str, str]
    tags: dict[str, str]
    latest_version: str | None
    versions: list[ModelVersionPublic]


class ModelList(BaseModel):
    models: list[RegisteredModelPublic]
    count: int = Field(description="Models on this page.")
    total: int = Field(description="Models that match in all.")
    limit: int
    offset: int


class ModelVersionList(BaseModel):
    name: str
    versions: list[ModelVersionPublic]
    count: int = Field(description="Versions on this page.")
    total: int = Field(description="Versions in all.")
    limit: int
    offset: int


class FeaturePublic(BaseModel):
    name: str
    dtype: str


class SignaturePublic(BaseModel):
    task: Literal["classification", "regression"]
    features: list[FeaturePublic]
    classes: list[str] | None


class ModelInfo(BaseModel):
    name: str
    version: str | None
    uri: str
    framework: str
    loader: str
    aliases: list[str]
    signature: SignaturePublic
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    loaded_at: str
    load_seconds: float
