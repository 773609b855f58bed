#!/usr/bin/env bash
# Regenerate the message classes from src/prediction_provider/api/grpc/open_inference.proto.
# The generated modules are committed, so installing the package needs no protoc. The
# service needs no generated code: api/grpc/server.py registers it from the descriptor.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PP_VENV:-.venv}/bin/python"
"$PY" -m grpc_tools.protoc -I src \
    --python_out=src --pyi_out=src \
    src/prediction_provider/api/grpc/open_inference.proto
# Build the messages in a pool of their own: tritonclient, MLServer and Triton's
# own stubs register the same "inference.*" names in protobuf's default pool,
# and a process that imports one of them beside us must not fail to start.
sed -i 's/_descriptor_pool.Default().AddSerializedFile(/_POOL.AddSerializedFile(/' \
    src/prediction_provider/api/grpc/open_inference_pb2.py
sed -i 's/^# @@protoc_insertion_point(imports)$/# @@protoc_insertion_point(imports)\n\n_POOL = _descriptor_pool.DescriptorPool()/' \
    src/prediction_provider/api/grpc/open_inference_pb2.py
