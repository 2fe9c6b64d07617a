"""The door: the API key, the body size limit, and a last net for failures after a response.

Plain ASGI middleware, not Starlette's BaseHTTPMiddleware, which would buffer streamed
responses and hide a client's disconnect from the routes.
"""

from __future__ import annotations

import hmac

from gptcli.server.errors import ApiError, json_response, log_line

OPEN_PATHS = frozenset({"/health"})  # for load balancers and scripts: no key, no secrets in it


class ApiKeyGate:
    """With a key, every route but /health needs ``Authorization: Bearer KEY``, else 401."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, "missing or wrong API key: send the server's --api-key as 'Authorization: Bearer KEY'",
                         code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await json_response(error)(scope, receive, send)

    def _allowed(self, scope) -> bool:
        header = _header(scope, b"authorization")
        scheme, _, token = header.partition(b" ")
        # compare_digest: the time taken must not tell how much of a guessed key was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


class BodyLimit:
    """413 for a request body past ``max_bytes``, declared (Content-Length) or sent (chunked).

    The body is read here, up to the limit, and handed on as it came: the routes never see a
    body that is too large, and a client's later disconnect still reaches them.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        messages = await self._read(receive)
        if messages is None:
            await self._refuse(scope, receive, send)
            return

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive) -> list | None:
        """The body's messages, or None once they pass the limit."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # the client left: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, scope, receive, send) -> None:
        error = ApiError(413, f"the request body is larger than this server's limit of {self.max_bytes:,} bytes "
                              f"(--max-request-bytes); send less", code="request_too_large")
        await json_response(error)(scope, receive, send)


class Contained:
    """The outermost layer: an error raised after Starlette has answered 500 ends here, logged once
    (by the error handler) and not again with a traceback by uvicorn."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - the client has its 500 already
            if scope["type"] != "http":
                log_line(f"{scope['type']}: {type(exc).__name__}: {exc}")
                raise


def _header(scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return b""
