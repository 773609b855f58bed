"""The frames between ``pp-grpc-frontend`` and its worker, built here byte by byte as
``native/grpc_frontend/frontend.cc`` writes and reads them (its header comment)."""

from __future__ import annotations

import asyncio
import socket
import struct

import grpc
import pytest

from prediction_provider.api.grpc.native_frontend import FrontendLink, answer_frame, parse_call


def call_frame(
    call: int, method: str, peer: str, metadata: list[tuple[bytes, bytes]], request: bytes
) -> bytes:
    """A forwarded call as the front end sends it, without the leading u32 size."""
    out = struct.pack("<Q", call)
    for text in (method.encode(), peer.encode()):
        out += struct.pack("<H", len(text)) + text
    out += struct.pack("<H", len(metadata))
    for key, value in metadata:
        out += struct.pack("<H", len(key)) + key + struct.pack("<I", len(value)) + value
    return out + request


def test_a_forwarded_call_gives_its_method_peer_metadata_and_request_bytes() -> None:
    request = bytes(range(256)) * 3  # any bytes, NULs and all
    frame = call_frame(
        2**40 + 7,
        "/inference.GRPCInferenceService/ModelInfer",
        "ipv4:127.0.0.1:51234",
        [(b"x-api-key", b"pp_secret"), (b"trace-bin", b"\x00\xff\x10"), (b"user-agent", "caf\xe9".encode())],
        request,
    )
    call, method, peer, metadata, body = parse_call(memoryview(frame))
    assert call == 2**40 + 7
    assert method == "/inference.GRPCInferenceService/ModelInfer"
    assert peer == "ipv4:127.0.0.1:51234"
    # As grpcio gives metadata: "-bin" values as bytes, the others as text.
    assert metadata == (("x-api-key", "pp_secret"), ("trace-bin", b"\x00\xff\x10"), ("user-agent", "caf\xe9"))
    assert body == request


def test_a_call_without_metadata_or_request_bytes_parses() -> None:
    frame = call_frame(1, "/grpc.health.v1.Health/Check", "", [], b"")
    assert parse_call(memoryview(frame)) == (1, "/grpc.health.v1.Health/Check", "", (), b"")


@pytest.mark.parametrize("cut", [3, 9, 13])  # inside the value, its length, the key
def test_a_truncated_frame_is_refused_rather_than_misread(cut: int) -> None:
    frame = call_frame(3, "/m", "peer", [(b"key", b"value")], b"")
    with pytest.raises(ValueError, match="truncated call frame"):
        parse_call(memoryview(frame[:-cut]))


def read_answer(frame: bytes) -> tuple[int, int, str, bytes]:
    """An answer as the front end reads it: size, call, status code, message, reply."""
    size, call, code, message_size = struct.unpack_from("<IQBH", frame)
    assert size == len(frame) - 4
    message = frame[15 : 15 + message_size].decode()
    return call, code, message, frame[15 + message_size :]


def test_an_answer_carries_the_call_its_status_and_the_reply() -> None:
    reply = b"\x0a\x03abc\x00"
    assert read_answer(answer_frame(99, grpc.StatusCode.OK, reply=reply)) == (99, 0, "", reply)


def test_an_error_answer_carries_the_grpc_status_code_and_message() -> None:
    frame = answer_frame(5, grpc.StatusCode.NOT_FOUND, "unknown model 'nope'")
    assert read_answer(frame) == (5, grpc.StatusCode.NOT_FOUND.value[0], "unknown model 'nope'", b"")


def test_a_message_longer_than_the_u16_field_is_cut_to_fit() -> None:
    frame = answer_frame(5, grpc.StatusCode.INVALID_ARGUMENT, "x" * 70_000, reply=b"tail")
    call, code, message, reply = read_answer(frame)
    assert (call, code, len(message), reply) == (5, 3, 0xFFFF, b"tail")


def sized(frame: bytes) -> bytes:
    return struct.pack("<I", len(frame)) + frame


def test_a_malformed_call_fails_alone_and_the_calls_after_it_are_answered() -> None:
    """Over a real socket: one bad frame gets INTERNAL; the link stays up for the next."""

    async def exchange() -> list[tuple[int, int, str, bytes]]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        hello: asyncio.Future[int] = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: FrontendLink({}, hello), sock=ours)
        try:
            bad = call_frame(3, "/m", "peer", [(b"key", b"value")], b"")[:-3]
            unknown = call_frame(4, "/no.Such/Method", "peer", [], b"")
            await loop.sock_sendall(theirs, sized(bad) + sized(unknown))
            received = b""
            answers: list[tuple[int, int, str, bytes]] = []
            while len(answers) < 2:
                data = await asyncio.wait_for(loop.sock_recv(theirs, 65536), timeout=10)
                assert data, f"the worker closed the link after {answers}"
                received += data
                while len(received) >= 4 and len(received) >= 4 + struct.unpack_from("<I", received)[0]:
                    end = 4 + struct.unpack_from("<I", received)[0]
                    answers.append(read_answer(received[:end]))
                    received = received[end:]
            return answers
        finally:
            hello.cancel()  # never sent here
            transport.close()
            theirs.close()

    (bad, unknown) = asyncio.run(exchange())
    assert bad[:2] == (3, grpc.StatusCode.INTERNAL.value[0])
    assert unknown[:3] == (4, grpc.StatusCode.UNIMPLEMENTED.value[0], "Method not found: /no.Such/Method")
