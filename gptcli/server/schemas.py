"""The request bodies of the OpenAI routes, with the ranges OpenAI documents.

Fields OpenAI defines that change nothing here (``user``, ``store``, ``metadata`` ...) are
accepted and ignored, as OpenAI-compatible tools send them; fields that would change the
result and that gptcli cannot honour are refused by ``refuse_unsupported`` rather than
silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from gptcli.server.errors import ApiError, bad_request

MAX_CHOICES = 16  # n per request: every choice is a row of the running batch
MAX_STOPS = 4  # OpenAI's limit
MAX_TOP_LOGPROBS = 20  # chat; completions allow 5


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class ImageURL(_Body):
    url: str
    detail: Optional[str] = None  # OpenAI's resolution hint; the model's processor decides the size here


class ContentPart(_Body):
    """A part of a message's content: ``text``, or ``image_url`` (a data URL or an http(s) URL)."""

    type: str
    text: Optional[str] = None
    image_url: Union[ImageURL, str, None] = None  # some clients send the URL itself as the value

    def url(self) -> str | None:
        return self.image_url.url if isinstance(self.image_url, ImageURL) else self.image_url


class ChatMessage(_Body):
    role: str
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """What chat and completions share: limits, sampling, stops, streaming."""

    model: str
    max_tokens: Optional[Annotated[int, Field(ge=1)]] = None
    temperature: Optional[Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]] = None
    top_p: Optional[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]] = None
    n: Optional[Annotated[int, Field(ge=1, le=MAX_CHOICES)]] = None
    stop: Union[str, Annotated[list[str], Field(max_length=MAX_STOPS)], None] = None
    seed: Optional[int] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]] = None
    frequency_penalty: Optional[Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]] = None
    logit_bias: Optional[dict[str, float]] = None
    response_format: Optional[dict] = None

    def constraint(self):
        """The output constraint ``response_format`` asks for (engine.constraints), or None.

        Raises:
            ApiError: 400 naming response_format when it cannot be enforced, or with ``stop``.
        """
        if self.response_format is None:
            return None
        from gptcli.engine.constraints import ConstraintError, from_response_format

        try:
            constraint = from_response_format(self.response_format)
        except ConstraintError as exc:
            raise bad_request(f"'response_format': {exc}", "response_format") from None
        if constraint is not None and self.stop_strings():
            raise bad_request("'stop' cannot be combined with a response_format: a stop string could cut the "
                              "output before it is complete", "stop")
        return constraint

    def limit(self) -> int | None:
        """The token budget asked for, if any."""
        return self.max_tokens

    def stop_strings(self) -> tuple[str, ...]:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not stop for stop in stops):
            raise bad_request("'stop' strings must not be empty", "stop")
        return stops

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Optional[Annotated[int, Field(ge=1)]] = None
    logprobs: Optional[bool] = False
    top_logprobs: Optional[Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)]] = None

    def limit(self) -> int | None:
        # max_completion_tokens replaced max_tokens in OpenAI's API; the newer one wins.
        return self.max_completion_tokens or self.max_tokens

    def logprob_count(self) -> int | None:
        """None: no log-probabilities; k: the chosen tokens' and the k likeliest."""
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampling):
    prompt: Union[str, Annotated[list[str], Field(min_length=1)]]
    logprobs: Optional[Annotated[int, Field(ge=0, le=5)]] = None
    echo: Optional[bool] = False
    best_of: Optional[int] = None
    suffix: Optional[str] = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def logprob_count(self) -> int | None:
        return self.logprobs


class EmbeddingRequest(_Body):
    model: str
    input: Union[str, Annotated[list[str], Field(min_length=1)]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


# Chat parameters that would change the answer and that gptcli does not implement.
_UNSUPPORTED_CHAT = ("tools", "functions", "tool_choice", "function_call", "audio", "prediction")


def refuse_unsupported(body: _Sampling) -> None:
    """400 for parameters that would change the result and are not implemented (never ignored)."""
    if body.logit_bias:
        raise ApiError(400, "'logit_bias' is not supported by this server", "logit_bias", "unsupported_parameter")
    extra = body.model_extra or {}
    for name in _UNSUPPORTED_CHAT:
        if extra.get(name):
            raise ApiError(400, f"'{name}' is not supported by this server (text in, text out only)", name,
                           "unsupported_parameter")
    if isinstance(body, CompletionRequest):
        _refuse_completion_extras(body)


def _refuse_completion_extras(body: CompletionRequest) -> None:
    if body.echo:
        raise ApiError(400, "'echo' is not supported by this server", "echo", "unsupported_parameter")
    if body.best_of not in (None, 1):
        raise ApiError(400, "'best_of' other than 1 is not supported by this server", "best_of",
                       "unsupported_parameter")
    if body.suffix:
        raise ApiError(400, "'suffix' is not supported by this server", "suffix", "unsupported_parameter")
