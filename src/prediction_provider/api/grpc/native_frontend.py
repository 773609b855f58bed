"""The gRPC port served through ``pp-grpc-frontend``, the native transport.

grpcio's asyncio binding costs more CPU per call than the whole REST path does, so
with ``PP_GRPC_FRONTEND=native`` a small C++ process (``native/grpc_frontend``)
terminates gRPC instead and forwards each unary call, still serialized, over a
private Unix socket. Here it meets the same servicers as under ``grpc.aio``
(:class:`InferenceServicer`, the readiness health check), given a context that
carries the forwarded metadata and peer, so authentication, RBAC, rate limits,
audit and validation are the same code on both transports.

Streaming methods (health ``Watch``, server reflection) are not forwarded: they
answer UNIMPLEMENTED, and ``PP_GRPC_FRONTEND=python`` serves them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from prediction_provider.api.deps import Services
from prediction_provider.api.grpc import open_inference_pb2 as pb
from prediction_provider.api.grpc.health import ReadinessHealth
from prediction_provider.api.grpc.server import SERVICE, InferenceServicer

log = logging.getLogger(__name__)

BINARY_NAME = "pp-grpc-frontend"
START_TIMEOUT_S = 30.0
RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0

_SIZE = struct.Struct("<I")
_CALL = struct.Struct("<Q")
_SHORT = struct.Struct("<H")
_LONG = struct.Struct("<I")
_ANSWER_HEAD = struct.Struct("<IQBH")  # size, call, status, message length
_HELLO_CALL = 0


def find_binary(configured: Path | None) -> Path | None:
    """The configured binary, else ``pp-grpc-frontend`` beside this Python or on ``PATH``."""
    if configured is not None:
        return configured if os.access(configured, os.X_OK) else None
    beside = Path(sys.executable).parent / BINARY_NAME
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(BINARY_NAME)
    return Path(found) if found else None


class Aborted(Exception):
    """What ``context.abort`` raises: ends the call with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ForwardedContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use, for a forwarded call."""

    __slots__ = ("_metadata", "_peer", "trailing_metadata")

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer
        self.trailing_metadata: tuple[tuple[str, str], ...] = ()

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        """Kept, not sent: the native front end's frames carry the reply only; the reply's
        ``parameters`` name the experiment variant there (pp_variant)."""
        self.trailing_metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Aborted(code, details)


@dataclass(frozen=True, slots=True)
class UnaryMethod:
    decode: Callable[[bytes], Any]
    handle: Callable[[Any, ForwardedContext], Awaitable[Any]]
    encode: Callable[[Any], bytes]


def unary_methods(servicer: InferenceServicer, health: ReadinessHealth) -> dict[str, UnaryMethod]:
    """Every method the front end may forward, by its path (``/package.Service/Method``)."""
    methods = {
        f"/{SERVICE.full_name}/{method.name}": UnaryMethod(
            getattr(pb, method.input_type.name).FromString,
            getattr(servicer, method.name),
            getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in SERVICE.methods
    }
    methods["/grpc.health.v1.Health/Check"] = UnaryMethod(
        health_pb2.HealthCheckRequest.FromString,
        health.Check,
        health_pb2.HealthCheckResponse.SerializeToString,
    )
    return methods


def _text(raw: bytes | memoryview) -> str:
    return str(raw, "utf-8", "replace")


def _short_text(frame: memoryview, offset: int) -> tuple[str, int]:
    """The u16-length-prefixed text at ``offset``, and the offset after it."""
    (size,) = _SHORT.unpack_from(frame, offset)
    end = offset + 2 + size
    return _text(frame[offset + 2 : end]), end


def parse_call(frame: memoryview) -> tuple[int, str, str, tuple[tuple[str, str | bytes], ...], bytes]:
    """A forwarded call: its id, method path, peer, metadata and serialized request.

    Raises ``ValueError`` for a frame shorter than the lengths inside it say.
    """
    try:
        return _parse_call(frame)
    except struct.error as exc:
        raise ValueError(f"truncated call frame: {exc}") from None


def _parse_call(frame: memoryview) -> tuple[int, str, str, tuple[tuple[str, str | bytes], ...], bytes]:
    (call,) = _CALL.unpack_from(frame, 0)
    method, offset = _short_text(frame, 8)
    peer, offset = _short_text(frame, offset)
    (count,) = _SHORT.unpack_from(frame, offset)
    offset += 2
    metadata: list[tuple[str, str | bytes]] = []
    for _ in range(count):
        key, offset = _short_text(frame, offset)
        (size,) = _LONG.unpack_from(frame, offset)
        raw = bytes(frame[offset + 4 : offset + 4 + size])
        offset += 4 + size
        # As grpcio gives them: binary ("-bin") values as bytes, the others as text.
        metadata.append((key, raw if key.endswith("-bin") else _text(raw)))
    if offset > len(frame):  # a slice past the end is shorter, not an error
        raise ValueError(f"truncated call frame: {offset} bytes announced, {len(frame)} received")
    return call, method, peer, tuple(metadata), bytes(frame[offset:])


def answer_frame(call: int, code: grpc.StatusCode, message: str = "", reply: bytes = b"") -> bytes:
    text = message.encode("utf-8")[:0xFFFF]
    head = _ANSWER_HEAD.pack(8 + 1 + 2 + len(text) + len(reply), call, code.value[0], len(text))
    return head + text + reply


class FrontendLink(asyncio.Protocol):
    """The socket to one front end: reads forwarded calls, serves each as a task, writes answers.

    Answers finished in one pass of the event loop leave in one write.
    """

    def __init__(self, methods: dict[str, UnaryMethod], hello: asyncio.Future[int]) -> None:
        self.methods = methods
        self.hello = hello
        self.transport: asyncio.Transport | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.closed = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._outbox: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("the gRPC front end closed its socket before starting"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        view = memoryview(buffer)
        offset = 0
        try:
            while len(buffer) - offset >= 4:
                (size,) = _SIZE.unpack_from(view, offset)
                end = offset + 4 + size
                if end > len(buffer):
                    break
                self._frame(view[offset + 4 : end])
                offset = end
        finally:
            view.release()
        if offset:
            # A new buffer, not ``del buffer[:offset]``: a slice of a served frame still held
            # elsewhere (say, by a logged traceback) would make resizing this one fail.
            self._buffer = buffer[offset:]

    def _frame(self, frame: memoryview) -> None:
        if _CALL.unpack_from(frame, 0)[0] == _HELLO_CALL:
            if not self.hello.done():
                self.hello.set_result(int(_text(frame[8:])))
            return
        try:
            call, path, peer, metadata, request = parse_call(frame)
        except ValueError as exc:
            # Frames are delimited by their size, so the stream stays in step: fail this call alone.
            log.error("malformed frame from the gRPC front end: %s", str(exc))
            if len(frame) >= _CALL.size:
                self._send(
                    answer_frame(_CALL.unpack_from(frame, 0)[0], grpc.StatusCode.INTERNAL, "malformed call")
                )
            return
        if not self.accepting:
            self._send(answer_frame(call, grpc.StatusCode.UNAVAILABLE, "the server is shutting down"))
            return
        context = ForwardedContext(metadata, peer)
        task = asyncio.get_running_loop().create_task(self._serve(call, path, context, request))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _serve(self, call: int, path: str, context: ForwardedContext, request: bytes) -> None:
        method = self.methods.get(path)
        if method is None:
            self._send(answer_frame(call, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}"))
            return
        try:
            message = method.decode(request)
        except DecodeError:
            problem = f"{path}: the request does not parse"
            self._send(answer_frame(call, grpc.StatusCode.INVALID_ARGUMENT, problem))
            return
        try:
            reply = await method.handle(message, context)
        except Aborted as exc:
            self._send(answer_frame(call, exc.code, exc.details))
        except asyncio.CancelledError:
            self._send(answer_frame(call, grpc.StatusCode.CANCELLED, "the server is shutting down"))
            raise
        except Exception as exc:
            log.exception("gRPC %s failed", path)
            self._send(answer_frame(call, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}"))
        else:
            self._send(answer_frame(call, grpc.StatusCode.OK, "", method.encode(reply)))

    def _send(self, frame: bytes) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self._outbox.append(frame)

    def flush(self) -> None:
        """Write the queued answers in one write (also on shutdown, before the socket closes)."""
        frames, self._outbox = self._outbox, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(frames))


class NativeFrontend:
    """One worker's front end: started with the worker, started again if it dies, stopped
    (and waited for) with the worker."""

    def __init__(self, services: Services, host: str, port: int, binary: Path) -> None:
        self.health = ReadinessHealth(services, (SERVICE.full_name,))
        self.methods = unary_methods(InferenceServicer(services), self.health)
        self.max_message_bytes = services.settings.max_body_bytes
        self.host = host
        self.port = port  # as asked for until started; then the bound port
        self.binary = binary
        self.process: asyncio.subprocess.Process | None = None
        self.link: FrontendLink | None = None
        self.restarts = 0
        self._socket_dir: Path | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._launch()
        await self.health.refresh()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        log.info("gRPC Open Inference Protocol on %s:%d (native front end)", self.host, self.port)

    async def stop(self, grace_s: float) -> None:
        """Health goes NOT_SERVING, new calls are refused, calls in flight get ``grace_s``."""
        if self._stopping:
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        link = self.link
        if link is not None:
            link.accepting = False
            if link.in_flight:
                _, late = await asyncio.wait(set(link.in_flight), timeout=grace_s)
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.wait(late)
            link.flush()
            if link.transport is not None:
                link.transport.close()  # the front end sees the end of the socket and exits
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout=grace_s + 2)
            except TimeoutError:
                log.warning("the gRPC front end did not exit; killing it")
                self.process.kill()
                await self.process.wait()
        if self._supervisor is not None:
            await self._supervisor
        self._remove_socket_dir()

    async def _supervise(self) -> None:
        delay = RESTART_DELAY_S
        while self.process is not None:
            code = await self.process.wait()
            if self._stopping:
                return
            log.error("the gRPC front end (pid %d) exited with %s; starting another", self.process.pid, code)
            self._remove_socket_dir()
            try:
                await self._launch()
                delay = RESTART_DELAY_S
                self.restarts += 1
            except OSError:
                log.exception("could not start the gRPC front end again; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY_S)

    async def _launch(self) -> None:
        loop = asyncio.get_running_loop()
        hello: asyncio.Future[int] = loop.create_future()
        links: list[FrontendLink] = []

        def accept() -> FrontendLink:
            link = FrontendLink(self.methods, hello)
            links.append(link)
            return link

        # A private directory (mode 0700): only this user can reach the socket.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="pp-grpc-"))
        socket_path = self._socket_dir / "worker.sock"
        listener = await loop.create_unix_server(accept, str(socket_path))
        address = f"{self.host}:{self.port}"
        process = await asyncio.create_subprocess_exec(
            str(self.binary), address, str(socket_path), str(self.max_message_bytes),
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        exited = loop.create_task(process.wait())
        try:
            done, _ = await asyncio.wait(
                {hello, exited}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if hello not in done or hello.exception() is not None:
                reason = f"exited with {process.returncode}" if exited in done else "did not start in time"
                raise OSError(f"the gRPC front end {self.binary} on {address} {reason}")
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            self._remove_socket_dir()
            raise
        finally:
            exited.cancel()
            listener.close()  # one front end per worker: no further connections
        self.process, self.link, self.port = process, links[0], hello.result()

    def _remove_socket_dir(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


async def start_native_frontend(services: Services, host: str, port: int, binary: Path) -> NativeFrontend:
    """Start ``binary`` on ``host:port`` (0 picks a free port), linked to this worker."""
    frontend = NativeFrontend(services, host, port, binary)
    await frontend.start()
    return frontend
