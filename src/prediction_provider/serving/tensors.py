"""Open Inference Protocol tensors: datatypes, shapes, JSON and binary encodings.

Shared by every v2 transport (REST with the binary extension, gRPC), so a new
transport only maps its wire format onto ``Tensor``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from prediction_provider.errors import InvalidTensor

NUMPY_BY_DATATYPE: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NUMERIC_DATATYPES = frozenset(NUMPY_BY_DATATYPE) - {"BYTES", "BOOL"}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named n-d array with its protocol datatype."""

    name: str
    datatype: str
    array: npt.NDArray[Any]

    @property
    def shape(self) -> list[int]:
        return [int(d) for d in self.array.shape]


def _element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def check_header(name: str, datatype: str, shape: Sequence[Any]) -> tuple[int, ...]:
    if datatype not in NUMPY_BY_DATATYPE:
        raise InvalidTensor(f"input {name!r}: unsupported datatype {datatype!r}")
    if not isinstance(shape, Sequence) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidTensor(f"input {name!r}: shape must be a list of non-negative integers")
    return tuple(int(d) for d in shape)


def _flatten(data: Any) -> list[Any]:
    """Row-major ``data`` may be flat or nested; flatten it without numpy guessing types."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def tensor_from_json(name: str, datatype: str, shape: Sequence[Any], data: Any) -> Tensor:
    dims = check_header(name, datatype, shape)
    flat = _flatten(data)
    if len(flat) != _element_count(dims):
        raise InvalidTensor(
            f"input {name!r}: shape {list(dims)} needs {_element_count(dims)} values, got {len(flat)}"
        )
    if datatype == "BYTES":
        values = [v.encode() if isinstance(v, str) else v for v in flat]
        if not all(isinstance(v, bytes) for v in values):
            raise InvalidTensor(f"input {name!r}: BYTES data must be strings")
        array = np.empty(len(values), dtype=np.object_)
        array[:] = values
        return Tensor(name, datatype, array.reshape(dims))
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise InvalidTensor(f"input {name!r}: BOOL data must be true or false")
    elif not all(type(v) in (int, float) for v in flat):
        raise InvalidTensor(f"input {name!r}: {datatype} data must be numbers")
    try:
        array = np.array(flat, dtype=NUMPY_BY_DATATYPE[datatype])
    except (OverflowError, ValueError) as exc:
        raise InvalidTensor(f"input {name!r}: values do not fit {datatype}: {exc}") from exc
    return Tensor(name, datatype, array.reshape(dims))


def tensor_from_bytes(name: str, datatype: str, shape: Sequence[Any], raw: bytes) -> Tensor:
    """Decode binary tensor data: little-endian, row-major; BYTES as 4-byte length + bytes."""
    dims = check_header(name, datatype, shape)
    count = _element_count(dims)
    if datatype == "BYTES":
        values: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidTensor(f"input {name!r}: truncated BYTES element")
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            values.append(raw[offset : offset + length])
            offset += length
        if offset != len(raw) or len(values) != count:
            raise InvalidTensor(f"input {name!r}: binary BYTES data does not match shape {list(dims)}")
        array = np.empty(count, dtype=np.object_)
        array[:] = values
        return Tensor(name, datatype, array.reshape(dims))
    dtype = np.dtype(NUMPY_BY_DATATYPE[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensor(
            f"input {name!r}: {len(raw)} bytes of binary data, expected {count * dtype.itemsize} "
            f"for {datatype} {list(dims)}"
        )
    return Tensor(name, datatype, np.frombuffer(raw, dtype=dtype).reshape(dims))


def tensor_to_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        parts = []
        for value in tensor.array.reshape(-1):
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    dtype = np.dtype(NUMPY_BY_DATATYPE[tensor.datatype]).newbyteorder("<")
    return np.ascontiguousarray(tensor.array, dtype=dtype).tobytes()


def tensor_to_json_data(tensor: Tensor) -> list[Any]:
    """Flat row-major data, as Triton answers; BYTES become strings."""
    flat = tensor.array.reshape(-1)
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def labels_tensor(name: str, labels: Sequence[Any]) -> Tensor:
    array = np.empty(len(labels), dtype=np.object_)
    array[:] = [str(label).encode() for label in labels]
    return Tensor(name, "BYTES", array)
