"""The HTTP client the commands use with --server. Standard library only: no torch, no
transformers, no HTTP package, so a command sent to a warm server starts in a blink."""

from __future__ import annotations

import json
import os
from typing import Iterator
from urllib.parse import urlsplit

from gptcli.errors import GptcliError, InputError, UsageError

SERVER_ENV = "GPTCLI_SERVER"
API_KEY_ENV = "GPTCLI_API_KEY"
TIMEOUT_SECONDS = 600.0  # one request's whole time: a long generation on a busy server stays within it


class ServerClient:
    """Talks to one `gptcli serve` at ``url`` (http://host:port)."""

    def __init__(self, url: str, api_key: str | None = None):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--server must be a URL like http://127.0.0.1:8000, got {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._parts = parts
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)

    def post(self, path: str, body: dict) -> dict:
        """POST a JSON body; the JSON answer. Raises the error the server described."""
        response, connection = self._send("POST", path, body)
        try:
            return self._json(response)
        finally:
            connection.close()

    def get(self, path: str) -> dict:
        response, connection = self._send("GET", path, None)
        try:
            return self._json(response)
        finally:
            connection.close()

    def stream(self, path: str, body: dict) -> Iterator[dict]:
        """POST a JSON body; each server-sent event's JSON data, until ``[DONE]``."""
        response, connection = self._send("POST", path, body)
        try:
            if response.status != 200:
                self._json(response)  # raises the server's error
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise _server_error(event["error"], 500)
                yield event
        finally:
            connection.close()

    def _send(self, method: str, path: str, body: dict | None):
        import http.client

        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(self._parts.hostname, self._parts.port, timeout=TIMEOUT_SECONDS)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            connection.request(method, path, body=data, headers=headers)
            return connection.getresponse(), connection
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise GptcliError(f"cannot reach the gptcli server at {self.url} ({_reason(exc)}); start it with "
                              f"`gptcli serve` or fix --server / {SERVER_ENV}") from None

    def _json(self, response) -> dict:
        raw = response.read()
        try:
            answer = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise GptcliError(f"the server at {self.url} answered {response.status} with something that is not "
                              f"JSON; is it a gptcli server?") from None
        if response.status >= 400 or "error" in answer:
            raise _server_error(answer.get("error") or {}, response.status, self.url)
        return answer


def _server_error(error: dict, status: int, url: str = "the server") -> GptcliError:
    """The server's error as the exception the local command would have raised."""
    message = error.get("message") or f"{url} answered HTTP {status}"
    if status == 401:
        return UsageError(f"{url} refused the API key ({message}); pass the server's key in {API_KEY_ENV}")
    if error.get("type") in ("input_error", "invalid_request_error") and status in (400, 404, 413):
        return (UsageError if error.get("code") == "usage_error" else InputError)(message)
    return GptcliError(message)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.strip()
