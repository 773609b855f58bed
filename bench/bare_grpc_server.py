"""A grpcio server that answers ``ModelInfer`` with one fixed reply and does nothing else.

The protocols benchmark measures it with the same gRPC load generator as the
real servers, to show what the transport alone (grpc.aio on uvloop, as
Prediction Provider serves it) costs on this machine: no server doing real
work over Python grpcio can be faster than this one.

Run: ``python bench/bare_grpc_server.py PORT REPLY_FILE`` (REPLY_FILE holds a
serialized ``ModelInferResponse``). It serves until it is stopped.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc


async def serve(port: int, reply: bytes, method: str) -> None:
    service, name = method.strip("/").split("/")

    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # No (de)serializers: bytes in, the same bytes out, so protobuf costs nothing here either.
    handler = grpc.method_handlers_generic_handler(
        service, {name: grpc.unary_unary_rpc_method_handler(answer)}
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"could not bind 127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    from grpc_loadgen import model_infer_method
    from loadgen import loop_factory

    port, reply_file = int(sys.argv[1]), Path(sys.argv[2])
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(port, reply_file.read_bytes(), model_infer_method()))


if __name__ == "__main__":
    main()
