"""The FastAPI application: routes, error shapes and limits over one served model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gptcli.server.host import EngineHost
from gptcli.server.naming import ServedName


TEXT_BODY_BYTES = 4 * 2**20
IMAGE_BODY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ServeSettings:
    """What the command line decides about the server itself (not about the model)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queued: int = 64
    max_request_bytes: int | None = None  # None: body_limit() chooses from the served model
    verbose: bool = False

    def body_limit(self, takes_images: bool) -> int:
        """The largest request body: as given, else room for a long text prompt, or for a few
        photos sent as base64 data URLs (a third larger than the files) to a vision model."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return IMAGE_BODY_BYTES if takes_images else TEXT_BODY_BYTES


@dataclass
class Served:
    """What the routes reach through ``app.state.served``."""

    host: EngineHost
    lm: object
    name: ServedName
    embedder: object  # embeddings.Embedder
    started: int = field(default_factory=lambda: int(time.time()))

    def other_names(self) -> tuple[ServedName, ...]:
        return (self.embedder.name,) if self.embedder is not None else ()


def create_app(served: Served, settings: ServeSettings):
    """The ASGI application serving ``served`` under ``settings``' key and body limit."""
    from fastapi import FastAPI

    from gptcli import __version__
    from gptcli.server import batch_tasks, embeddings, routes, tasks
    from gptcli.server.errors import install_error_handlers
    from gptcli.server.limits import ApiKeyGate, BodyLimit, Contained

    # No /docs or /openapi.json: an API for programs, and nothing to load from a CDN.
    app = FastAPI(title="gptcli", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.include_router(routes.router)
    app.include_router(embeddings.router)
    app.include_router(tasks.router)  # gptcli's own routes, for the commands' --server
    app.include_router(batch_tasks.router)  # summarize, translate and classify
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.body_limit(getattr(served.lm, "takes_images", False)))
    app.add_middleware(ApiKeyGate, api_key=settings.api_key)  # added last: runs first
    return Contained(app)
