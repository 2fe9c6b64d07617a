"""Every failure in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``.

OpenAI's clients read the status code to pick an exception class and show ``message``, so
each error says what was wrong in the request's own terms (the JSON parameter, not a
command-line flag) and what to do about it.
"""

from __future__ import annotations

import sys

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """An error answered to the client as it is, with its status and OpenAI fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = INVALID_REQUEST, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = INVALID_REQUEST, param: str | None = None,
               code: str | None = None) -> dict:
    """The JSON object OpenAI answers with when a request fails."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


def json_response(error: ApiError):
    from fastapi.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_error_handlers(app) -> None:
    """Answer ApiError, FastAPI's body validation and Starlette's own HTTP errors in OpenAI's shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_api_error(_request, exc: ApiError):
        return json_response(exc)

    async def on_validation_error(_request, exc: RequestValidationError):
        return json_response(validation_error(exc.errors()))

    async def on_http_error(_request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return json_response(ApiError(exc.status_code, str(exc.detail), code=code,
                                      headers=getattr(exc, "headers", None)))

    async def on_unexpected(request, exc: Exception):
        return json_response(unexpected(exc, request.url.path))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def validation_error(errors: list) -> ApiError:
    """A 400 naming the first parameter pydantic refused (OpenAI answers 400, not FastAPI's 422)."""
    if not errors:
        return bad_request("the request body is not valid")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON ({first.get('msg', '')}); send a JSON object",
                           code="invalid_json")
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = _param_path(location) or None
    if first.get("type") == "missing":
        return bad_request(f"missing required parameter {param!r}", param, code="missing_required_parameter")
    if param is None:
        return bad_request(f"the request body must be a JSON object ({first.get('msg', 'not valid')})")
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" {value!r}"
    return bad_request(f"invalid value for {param!r}{shown}: {first.get('msg', 'not valid')}", param)


def _param_path(location: list[str]) -> str:
    """pydantic's location as OpenAI writes a parameter: messages[0].content (union branches dropped)."""
    text = ""
    for part in location:
        if part.isdigit():
            text += f"[{part}]"
        elif not _is_union_branch(part):
            text += ("." if text else "") + part
    return text


def _is_union_branch(part: str) -> bool:
    # pydantic names which member of a union it tried ("str", "list[ContentPart]", "ImageURL",
    # "function-after[...]"); JSON field names here are all lower case
    return part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("function-") or part[:1].isupper()


def unexpected(exc: BaseException, where: str) -> ApiError:
    """A 500 for a bug or a failure of the machine, with one line on the server's stderr."""
    import os

    if os.environ.get("GPTCLI_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    from gptcli.models.placement import is_out_of_memory

    if isinstance(exc, Exception) and is_out_of_memory(exc):
        message = "the server ran out of memory; retry with a shorter prompt or fewer tokens"
    else:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        message = f"internal error: {type(exc).__name__}: {first}"
    log_line(f"{where}: {message}")
    return ApiError(500, message, type=SERVER_ERROR, code="internal_error")


def log_line(message: str) -> None:
    """One line of the server's own on stderr (never stdout: it stays empty)."""
    try:
        sys.stderr.write(f"gptcli serve: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr gone: the HTTP answer still tells the client
        pass
