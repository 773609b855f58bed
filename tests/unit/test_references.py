from __future__ import annotations

from pathlib import Path

import pytest

from prediction_provider.errors import InvalidModelReference
from prediction_provider.serving.references import ReferenceKind, parse_model_reference


@pytest.mark.parametrize(
    ("raw", "kind", "fields"),
    [
        ("runs:/abc123/model", ReferenceKind.RUN, {"run_id": "abc123", "artifact_path": "model"}),
        ("runs:/abc123/nested/model/", ReferenceKind.RUN, {"artifact_path": "nested/model"}),
        ("models:/eurusd-direction/3", ReferenceKind.VERSION, {"name": "eurusd-direction", "version": "3"}),
        ("models:/eurusd-direction@champion", ReferenceKind.ALIAS, {"alias": "champion"}),
        ("models:/eurusd-direction/latest", ReferenceKind.LATEST, {"name": "eurusd-direction"}),
        ("file:///srv/models/a.onnx", ReferenceKind.FILE, {"path": Path("/srv/models/a.onnx")}),
        (
            "file:///srv/models/with%20space.onnx",
            ReferenceKind.FILE,
            {"path": Path("/srv/models/with space.onnx")},
        ),
        ("eurusd-direction", ReferenceKind.NAME, {"name": "eurusd-direction"}),
    ],
)
def test_supported_references_parse(raw: str, kind: ReferenceKind, fields: dict[str, object]) -> None:
    ref = parse_model_reference(raw)
    assert ref.kind is kind
    for name, value in fields.items():
        assert getattr(ref, name) == value


def test_aliases_and_names_are_moving_but_versions_are_not() -> None:
    assert parse_model_reference("m").is_moving
    assert parse_model_reference("models:/m@champion").is_moving
    assert parse_model_reference("models:/m/latest").is_moving
    assert not parse_model_reference("models:/m/1").is_moving
    assert not parse_model_reference("runs:/abc/model").is_moving


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "x" * 600,
        "models:/",
        "models:/m/one",
        "models:/m/1/extra",
        "models:/m@bad alias",
        "models:/../etc/1",
        "runs:/abc",
        "runs:/abc/../../secrets",
        "runs:/not-hex!/model",
        "file://remote-host/model.onnx",
        "file:relative/model.onnx",
        "s3://bucket/model",
        "name with spaces",
        "../model",
    ],
)
def test_malformed_references_are_refused(raw: str) -> None:
    with pytest.raises(InvalidModelReference):
        parse_model_reference(raw)


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("models:/eurusd-direction/3", "eurusd-direction/3"),
        ("models:/eurusd-direction@champion", "eurusd-direction@champion"),
        ("models:/eurusd-direction/latest", "eurusd-direction/latest"),
        ("eurusd-direction", "eurusd-direction"),
        ("file:///srv/secret/models/direction.onnx", "direction"),
        ("runs:/abc123/nested/model", "model"),
    ],
)
def test_labels_name_the_model_without_any_path(raw: str, label: str) -> None:
    assert parse_model_reference(raw).label == label
