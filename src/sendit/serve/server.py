"""`sendit serve MODEL`: a model folder behind HTTP (FastAPI + uvicorn, the optional `serve` extra).

POST /predict takes {"texts": [...]} and answers one result per text with the fields and numbers of `sendit
predict` (`prediction`, `prob_positive`; k classes: `prediction`, `label_name`, `prob_<name>`). GET /health and
GET /model describe the service and the model.

Requests arriving within --max-wait-ms of each other are predicted together, up to --max-batch texts per model call:
one forward pass over 32 tweets costs far less than 32 passes over one, so concurrent clients share the model's
time instead of queueing for it. The model runs on one worker thread (a torch module or ONNX session is not safe to
call from several threads at once, and one call already uses every core), so the event loop keeps accepting and
validating requests while it works. fastapi and uvicorn are imported only when the command runs: the base install
imports this module without them.
"""

import asyncio
import contextlib
import errno
import importlib.util
import json
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from sendit.errors import ConfigError

INSTALL = "pip install 'sendit[serve]'"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how requests are merged into model calls."""

    max_batch: int = 64  # texts per model call
    max_wait_ms: float = 5.0  # how long the first request of a call waits for others to join it
    max_texts: int = 256  # texts per request
    max_body_bytes: int = 1_000_000  # request body, bytes
    max_text_chars: int = 5_000  # characters per text (a tweet has at most 280; the model keeps max_length tokens)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0 and not (name == "max_wait_ms" and value == 0):
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be positive (got {value}).")


class BadRequest(Exception):
    """A request the service refuses with a 4xx status and a one-paragraph `error`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def require_serve() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"sendit serve needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; install the serve "
                          f"extra with {INSTALL} and run the command again.")


class MicroBatcher:
    """Collects concurrent requests into model calls on one worker thread, and counts both."""

    def __init__(self, model, limits: Limits):
        self.model, self.limits = model, limits
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sendit-model")
        self.held = None  # a request that did not fit into the last call: it opens the next one
        self.requests = self.texts = self.model_calls = 0

    async def predict(self, texts: list[str]):
        """The class probabilities of `texts` (an array, one row per text), from a call shared with others."""
        future = asyncio.get_running_loop().create_future()
        self.requests += 1
        self.texts += len(texts)
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        """The batching loop: runs until cancelled at shutdown, after uvicorn has finished every request."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(loop)
            texts = [t for request_texts, _ in batch for t in request_texts]
            self.model_calls += 1
            try:
                probs = await loop.run_in_executor(self.worker, self._probs, texts)
            except Exception as e:  # a defect in one call must not end the loop: its requests answer 500
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for request_texts, future in batch:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(probs[start : start + len(request_texts)])
                start += len(request_texts)

    async def _collect(self, loop) -> list:
        """The requests of the next model call: the first one, then whatever arrives within max_wait_ms, as long
        as the texts fit into max_batch (a request larger than max_batch goes alone)."""
        first = self.held or await self.queue.get()
        self.held = None
        batch, n = [first], len(first[0])
        deadline = loop.time() + self.limits.max_wait_ms / 1000
        while n < self.limits.max_batch:
            try:  # requests that queued up while the model was busy join at once; then wait out the window
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if n + len(item[0]) > self.limits.max_batch:
                self.held = item
                break
            batch.append(item)
            n += len(item[0])
        return batch

    def _probs(self, texts: list[str]):
        return self.model.predict_proba(texts, self.limits.max_batch, progress=False).probs


def model_info(model, limits: Limits) -> dict:
    from sendit import __version__

    m = model.manifest
    return {"method": m.get("trained_method", m["method"]), "base_model": m["base_model"],
            "classes": list(model.classes), "precision": model.precision, "max_length": int(m.get("max_length", 128)),
            "format": "onnx" if type(model).__name__ == "OnnxModel" else "torch", "sendit_version": __version__,
            "limits": asdict(limits)}


def results(probs, classes: tuple[str, ...]) -> list[dict]:
    """`sendit predict`'s columns for each text, built by the same function, so the fields and numbers agree."""
    import pandas as pd

    from sendit.serve.predict import with_predictions

    return with_predictions(pd.DataFrame(index=range(len(probs))), probs, classes).to_dict("records")


async def read_texts(request, limits: Limits) -> list[str]:
    """The request's texts, or BadRequest. The body is read in pieces and refused as soon as it passes
    max_body_bytes, so a huge upload costs the service no more memory than the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise BadRequest(413, f"the request body has {int(declared):,} bytes; this service takes at most "
                              f"{limits.max_body_bytes:,} (--max-body-bytes). Send the texts in several requests.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limits.max_body_bytes:
            raise BadRequest(413, f"the request body is larger than {limits.max_body_bytes:,} bytes "
                                  f"(--max-body-bytes). Send the texts in several requests.")
    try:
        payload = json.loads(body)
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        raise BadRequest(400, f"the request body is not valid JSON ({e}). Send {{\"texts\": [\"a tweet\", ...]}} "
                              f"with Content-Type: application/json.") from None
    return check_texts(payload, limits)


def check_texts(payload, limits: Limits) -> list[str]:
    example = 'Send {"texts": ["a tweet", ...]}.'
    if not isinstance(payload, dict) or "texts" not in payload:
        raise BadRequest(422, f'the JSON body has no "texts" field. {example}')
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise BadRequest(422, f'"texts" must be a list of strings, not {type(texts).__name__}. {example}')
    if not texts:
        raise BadRequest(422, f'"texts" is empty: there is nothing to predict. {example}')
    if len(texts) > limits.max_texts:
        raise BadRequest(413, f'"texts" has {len(texts):,} items; this service takes at most {limits.max_texts:,} '
                              f"per request (--max-texts). Send them in several requests.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(422, f'"texts"[{i}] is {type(text).__name__}, not a string. {example}')
        if len(text) > limits.max_text_chars:
            raise BadRequest(413, f'"texts"[{i}] has {len(text):,} characters; this service takes at most '
                                  f"{limits.max_text_chars:,} per text (--max-text-chars).")
    return texts


def build_app(model, limits: Limits):
    """The FastAPI application. Every error, ours or the framework's (404, 405), answers {"error": "..."}.
    (No `from __future__ import annotations` in this module: FastAPI reads the endpoints' `Request` annotation,
    imported here, at run time.)"""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # uvicorn runs the shutdown half only after every in-flight request has been answered, so the batcher is
        # still there for the requests a SIGTERM interrupted.
        state["batcher"] = batcher = MicroBatcher(model, limits)
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        batcher.worker.shutdown(wait=True)

    app = FastAPI(title="sendit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    info = model_info(model, limits)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(message.split())}, status_code=status)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> JSONResponse:
        return error(e.status, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error(e.status_code, f"{request.method} {request.url.path}: {e.detail}. The service has GET /health, "
                                    f"GET /model and POST /predict.")

    @app.exception_handler(Exception)
    async def defect(request: Request, e: Exception) -> JSONResponse:
        return error(500, f"unexpected {type(e).__name__}: {e}. The service goes on; please report this.")

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        texts = await read_texts(request, limits)
        probs = await state["batcher"].predict(texts)
        return {"predictions": results(probs, model.classes)}

    @app.get("/health")
    async def health() -> dict:
        b = state["batcher"]
        return {"status": "ok", "requests": b.requests, "texts": b.texts, "model_calls": b.model_calls,
                "queued": b.queue.qsize()}

    @app.get("/model")
    async def describe() -> dict:
        return info

    return app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a taken port fails in a moment, in CLI terms."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse the port at once
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is taken (another sendit serve or another service); pass "
                              f"another --port, or stop what listens there.") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}); check --host and --port.") from None
    return sock


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, precision: str = "auto",
          limits: Limits = Limits(), log_level: str = "warning") -> int:
    """Serve a model folder until SIGTERM or Ctrl-C; returns 0 after a graceful stop.

    Args:
        model_dir: a model folder written by a run (RUN_DIR/<method>) or by sendit export (hf or onnx).
        host, port: where to listen (port 0: any free port, printed at start).
        precision: 'auto', 'bf16' or 'fp32', as for sendit predict.
        limits: request limits and micro-batching.
        log_level: uvicorn's log level ('info' also logs every request).
    """
    require_serve()
    import uvicorn

    from sendit.serve.model_folder import load

    sock = bind(host, port)
    try:
        model = load(model_dir, precision=precision)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(build_app(model, limits), log_level=log_level, timeout_graceful_shutdown=None)
    server = _server_class()(config)
    where = sock.getsockname()
    print(f"sendit serve: {model_dir} ({model_info(model, limits)['format']}, {model.precision}) on "
          f"http://{where[0]}:{where[1]} — POST /predict, GET /health, GET /model; Ctrl-C or SIGTERM stops it.",
          file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    print("sendit serve: stopped after answering every request in flight.", file=sys.stderr, flush=True)
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn stops gracefully on SIGTERM/SIGINT (no new connections, in-flight requests answered), then
            # raises the signal again, which would end the process with 143 or a KeyboardInterrupt. A stop that
            # finished every request is a success, so the handlers are only restored: exit code 0.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server

