"""Our .proto must match the protocol on the wire: same messages, field numbers and types."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2 as triton

from prediction_provider.api.grpc import open_inference_pb2 as ours

SHARED = [
    name for name in ours.DESCRIPTOR.message_types_by_name if name in triton.DESCRIPTOR.message_types_by_name
]


def fields(descriptor) -> dict[str, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    found = {f.name: (f.number, f.type, f.label) for f in descriptor.fields}
    for nested in descriptor.nested_types:
        for name, spec in fields(nested).items():
            found[f"{nested.name}.{name}"] = spec
    return found


def test_every_message_is_part_of_the_protocol() -> None:
    assert len(SHARED) == len(ours.DESCRIPTOR.message_types_by_name)


@pytest.mark.parametrize("name", SHARED)
def test_message_layout_matches(name: str) -> None:
    mine = fields(ours.DESCRIPTOR.message_types_by_name[name])
    theirs = fields(triton.DESCRIPTOR.message_types_by_name[name])
    assert {k: v for k, v in theirs.items() if k in mine} == mine


def test_service_methods_match() -> None:
    mine = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert mine.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in mine.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
