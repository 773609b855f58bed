"""The experiment resource as clients write it (``POST /api/v1/experiments``), validated.

Shape checks live here; whether the targets exist and agree on classes and features is checked
by ``Experiments.create`` against the registry, since only it can load them."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
VARIANT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
UNIT = re.compile(r"^(client|request|header:[A-Za-z0-9-]{1,64})$")
TERMINAL = frozenset({"promoted", "rolled_back", "stopped"})
STATES = ("draft", "running", "paused", "awaiting_promotion", "promoted", "rolled_back", "stopped")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantSpec(Strict):
    name: Annotated[str, Field(pattern=VARIANT)]
    target: Annotated[str, Field(min_length=1, max_length=300)]
    weight: Annotated[Decimal, Field(ge=0, le=10_000, decimal_places=2)] = Decimal(0)
    control: bool = False
    # Runs the control as a shadow on this variant's traffic: every row gets a paired control answer.
    compare_with_control: bool = False


class ShadowSpecIn(Strict):
    target: Annotated[str, Field(min_length=1, max_length=300)]
    percent: Annotated[float, Field(ge=0, le=100)] = 100.0
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 250
    max_inflight: Annotated[int, Field(ge=1, le=256)] = 4
    queue: Annotated[int, Field(ge=0, le=100_000)] = 256
    sample_by: Literal["unit", "request"] = "unit"


class RecordSpec(Strict):
    sample: Annotated[float, Field(ge=0, le=1)] = 1.0
    features: bool = False
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30


class ExperimentCreate(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    model: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    unit: str = "client"
    salt: Annotated[str | None, Field(max_length=128)] = None
    allow_forcing: bool = False
    variants: Annotated[list[VariantSpec], Field(min_length=1, max_length=10)]
    shadow: ShadowSpecIn | None = None
    rollout: dict[str, Any] | None = None  # validated by modelops.canary.RolloutConfig
    record: RecordSpec = Field(default_factory=RecordSpec)
    ends_at: datetime | None = None
    max_requests: Annotated[int | None, Field(ge=1)] = None

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        if not UNIT.match(value):
            raise ValueError('unit is "client", "request" or "header:<Name>"')
        return value

    @field_validator("ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("ends_at needs a timezone (UTC)")
        return value

    @model_validator(mode="after")
    def _variants(self) -> ExperimentCreate:
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        controls = [variant for variant in self.variants if variant.control]
        if len(controls) > 1:
            raise ValueError("exactly one variant is the control")
        if not controls:
            self.variants[0].control = True
        if len(self.variants) == 1 and self.shadow is None:
            raise ValueError("an experiment with one variant needs a shadow (a pure shadow test)")
        if self.rollout is not None and len(self.variants) != 2:
            raise ValueError("a rollout needs exactly one variant beside the control")
        total = sum(variant.weight for variant in self.variants)
        if total <= 0 and self.rollout is None and len(self.variants) > 1:
            raise ValueError("weights must not all be zero")
        return self

    @property
    def control(self) -> VariantSpec:
        return next(variant for variant in self.variants if variant.control)


class ExperimentPatch(Strict):
    """Weights (while paused, or any time in plain A/B mode) and the shadow's percent."""

    weights: dict[str, Annotated[Decimal, Field(ge=0, le=10_000, decimal_places=2)]] | None = None
    shadow_percent: Annotated[float | None, Field(ge=0, le=100)] = None


class TransitionIn(Strict):
    reason: Annotated[str | None, Field(max_length=200)] = None
