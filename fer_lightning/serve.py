"""The app: a local HTTP API and a page to try any model on photos and the webcam.

    python -m fer_lightning.serve [ckpt_path=pretrained:vgg] [host=127.0.0.1] [port=8000]

``POST /api/predict`` takes an image (a multipart ``file`` field, or the raw body with an image
content type) and answers the faces as ``predict``'s JSON lines give them (box, label,
probabilities); ``GET /api/models`` lists the models on offer, ``GET /healthz`` says the server is
up, ``/docs`` is the OpenAPI page, and ``/`` the page (static files in ``fer_lightning/web``,
nothing fetched from elsewhere). Safe by default: it binds to 127.0.0.1, refuses uploads over
``max_upload_bytes`` (413) and images over ``max_pixels`` from their header, answers every bad
request with a one-line JSON error, takes no file-system path from clients, and runs inference on
``workers`` threads of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fer_lightning.checkpoint import PRETRAINED_PREFIX, pretrained_names
from fer_lightning.cli import exit_on_user_error, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.errors import FERUserError, check_whole_number
from fer_lightning.faces import FaceDetector
from fer_lightning.recognizer import DEFAULT_MARGIN, EmotionRecognizer
from fer_lightning.tta import TTA_MODES

try:
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
except ImportError as err:  # the [app] extra is not installed
    raise ImportError(
        "the app needs FastAPI and uvicorn: pip install 'fer-lightning[app]'"
    ) from err

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
MODEL_TTA = "model"  # the `tta` option that keeps each model's own mode
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


@dataclass
class ServeSettings:
    """What the app serves and its limits (conf/serve.yaml documents each)."""

    models: list[str | list[str]]  # the first is the default
    detector: Callable[[], FaceDetector] | None = None  # None: the default detector
    tta: str | None = None
    live_tta: str | None = "none"  # the page's webcam mode starts with it (None: the model's own)
    device: str = "cpu"
    threads: int | None = None
    workers: int = 1
    max_upload_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    margin: float = DEFAULT_MARGIN
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        check_whole_number("workers", self.workers, 1)
        check_whole_number("max_upload_bytes", self.max_upload_bytes, 1)
        check_whole_number("max_pixels", self.max_pixels, 1)
        if self.live_tta is not None and self.live_tta not in TTA_MODES:
            raise FERUserError(f"live_tta={self.live_tta!r} is not one of {', '.join(TTA_MODES)}")
        self.names = [model_name(model) for model in self.models]


def model_name(model: str | list[str]) -> str:
    """The name a model goes by in the API: its path or pretrained:<name>; members joined by +."""
    return model if isinstance(model, str) else "+".join(str(member) for member in model)


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UploadLimit:
    """ASGI middleware refusing request bodies over ``max_bytes``: from Content-Length before
    reading, and while reading for bodies that do not say their length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            status, message = (
                (413, self.too_large()) if length.isdigit() else (400, "a bad Content-Length")
            )
            await JSONResponse({"error": message}, status)(scope, receive, send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise RequestError(413, self.too_large())
            return message

        await self.app(scope, limited, send)

    def too_large(self) -> str:
        return f"the upload is over the limit of {self.max_bytes:,} bytes (max_upload_bytes)"


class Recognizers:
    """The models on offer, loaded once each with every TTA asked for, and the inference
    threads they run on."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.detector = (settings.detector or (lambda: "default"))()
        self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="inference")
        self.loaded: dict[tuple[str, str], EmotionRecognizer] = {}
        self.loading = threading.Lock()
        for name in settings.names:  # load every model now: the first request must not wait
            self.get(name, MODEL_TTA)

    def get(self, name: str, tta: str) -> EmotionRecognizer:
        """The recognizer of model ``name`` with ``tta`` (``MODEL_TTA``: the configured one)."""
        if name not in self.settings.names:
            raise RequestError(
                400, f"model={name!r} is not one on offer: {', '.join(self.settings.names)}"
            )
        if tta != MODEL_TTA and tta not in TTA_MODES:
            modes = ", ".join((MODEL_TTA, *TTA_MODES))
            raise RequestError(400, f"tta={tta!r} is not one of {modes}")
        key = (name, tta)
        with self.loading:
            if key not in self.loaded:
                self.loaded[key] = self.load(name, tta)
        return self.loaded[key]

    def load(self, name: str, tta: str) -> EmotionRecognizer:
        """Load model ``name`` with ``tta``."""
        model = self.settings.models[self.settings.names.index(name)]
        return EmotionRecognizer(
            model,
            tta=self.settings.tta if tta == MODEL_TTA else tta,
            detector=self.detector,
            device=self.settings.device,
            threads=self.settings.threads,
            margin=self.settings.margin,
            max_pixels=self.settings.max_pixels,
        )

    def analyze(self, data: bytes, name: str, tta: str, detect: bool) -> list[dict[str, Any]]:
        """The faces of an encoded image as JSON-ready dicts (runs on an inference thread)."""
        return [face.to_dict() for face in self.get(name, tta).analyze(data, detect)]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "classes": self.loaded[(name, MODEL_TTA)].class_names,
                "tta": self.loaded[(name, MODEL_TTA)].tta,
                "tta_options": [MODEL_TTA, *TTA_MODES],
            }
            for name in self.settings.names
        ]


async def image_bytes(request: Request) -> bytes:
    """The uploaded image: a multipart ``file`` field, or the raw body with an image type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise RequestError(400, "the multipart upload has no file field named 'file'")
            kind = (upload.content_type or "application/octet-stream").lower()
            if not kind.startswith("image/") and kind != "application/octet-stream":
                raise RequestError(415, f"the file is {kind}, not an image")
            return await upload.read()
    if not content_type.startswith("image/"):
        raise RequestError(
            415,
            f"content type {content_type or '(none)'} is not an image: send a multipart 'file' "
            "field or an image/* body",
        )
    return await request.body()


def create_app(settings: ServeSettings) -> FastAPI:
    """The app; its models load when it starts (``with TestClient(app)`` or uvicorn)."""
    state: dict[str, Recognizers] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["recognizers"] = await asyncio.get_running_loop().run_in_executor(
            None, Recognizers, settings
        )
        yield
        state.pop("recognizers").executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="fer-lightning",
        summary="Facial-expression recognition of the faces in a photo",
        lifespan=lifespan,
    )
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, error.status)

    @app.exception_handler(FERUserError)
    async def user_error(request: Request, error: FERUserError) -> JSONResponse:
        return JSONResponse({"error": str(error).splitlines()[0]}, 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail).splitlines()[0]}, error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:])
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Whether the server is up and its models loaded."""
        return {"status": "ok"}

    @app.get("/api/models")
    async def models() -> dict[str, Any]:
        """The models on offer (the first is the default), their classes and TTA, and the `tta`
        option the page's webcam mode starts with."""
        return {
            "default": settings.names[0],
            "live_tta": settings.live_tta or MODEL_TTA,
            "models": state["recognizers"].describe(),
        }

    @app.post(
        "/api/predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def predict(
        request: Request,
        model: str | None = Query(None, description="one of /api/models; default: the first"),
        tta: str = Query(MODEL_TTA, description="model (its own), none, flip or tencrop"),
        detect: bool = Query(True, description="false: the whole image is one face"),
    ) -> dict[str, Any]:
        """The faces of an image, left to right: box [x, y, w, h], label and probabilities,
        as `predict` writes them."""
        data = await image_bytes(request)
        recognizers = state["recognizers"]
        name = model or settings.names[0]
        faces = await asyncio.get_running_loop().run_in_executor(
            recognizers.executor, recognizers.analyze, data, name, tta, detect
        )
        return {"model": name, "faces": faces}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def settings_from_config(cfg: DictConfig) -> ServeSettings:
    """The app's settings from conf/serve.yaml."""
    ckpt = (
        OmegaConf.to_container(cfg.ckpt_path) if OmegaConf.is_list(cfg.ckpt_path) else cfg.ckpt_path
    )
    models: list[str | list[str]] = [ckpt]
    if cfg.offer_pretrained:
        models += [
            f"{PRETRAINED_PREFIX}{name}"
            for name in pretrained_names()
            if f"{PRETRAINED_PREFIX}{name}" != ckpt
        ]
    return ServeSettings(
        models=models,
        detector=lambda: hydra.utils.instantiate(cfg.detector),
        tta=cfg.tta,
        live_tta=cfg.live_tta,
        device=cfg.device,
        threads=cfg.threads,
        workers=cfg.workers,
        max_upload_bytes=cfg.max_upload_bytes,
        max_pixels=cfg.max_pixels,
        margin=cfg.margin,
    )


def serve(cfg: DictConfig) -> None:
    """Run the app with uvicorn until Ctrl+C."""
    import uvicorn

    check_whole_number("port", cfg.port, 0)
    app = create_app(settings_from_config(cfg))
    log.info("Serving on http://%s:%d (the page), API docs at /docs", cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def main(cfg: DictConfig) -> None:
    """Serve the app: the page and the HTTP API."""
    exit_on_user_error(serve, cfg)


if __name__ == "__main__":
    main()
