"""What a loaded model expects and produces, shared by every loader and transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["classification", "regression"]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    dtype: str = "float64"


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """Ordered input features and, for classifiers, the class labels in output order."""

    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] = field(init=False)
    feature_index: dict[str, int] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(spec.name for spec in self.features)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in signature: {names}")
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "feature_index", {name: i for i, name in enumerate(names)})

    @property
    def task(self) -> Task:
        return "classification" if self.classes else "regression"

    @classmethod
    def from_names(
        cls, names: list[str] | tuple[str, ...], classes: list[str] | tuple[str, ...] | None = None
    ) -> ModelSignature:
        return cls(
            features=tuple(FeatureSpec(str(name)) for name in names),
            classes=tuple(str(c) for c in classes) if classes else None,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "features": [{"name": f.name, "dtype": f.dtype} for f in self.features],
            "classes": list(self.classes) if self.classes else None,
        }
