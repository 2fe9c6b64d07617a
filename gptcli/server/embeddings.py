"""/v1/embeddings: the packaged MiniLM (or --embedding-model), loaded on first use.

Loaded lazily: a server used only for chat never pays its load time or memory; the first
embeddings request waits for the load (a second or two for MiniLM), later ones do not.
Vectors are made by services.embed, as `gptcli embed` makes them: the pooling and
normalisation the model's sentence-transformers config asks for (mean and unit length without one).
"""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request

from gptcli.errors import GptcliError
from gptcli.server.errors import SERVER_ERROR, ApiError, bad_request
from gptcli.server.naming import check_model, served_name
from gptcli.server.schemas import EmbeddingRequest

DEFAULT_EMBEDDING_MODEL = "minilm"
EMBED_BATCH = 32  # texts per forward pass
MAX_INPUTS = 2048  # OpenAI's limit per request

router = APIRouter()


class Embedder:
    """A sentence-embedding model served from its own thread, loaded when first asked for."""

    def __init__(self, spec: str | None, device: str, dtype: str = "auto"):
        from gptcli.models.resolve import resolve

        self.spec = spec or DEFAULT_EMBEDDING_MODEL
        try:  # a path that does not exist fails at start, not on the first request
            self.name = served_name(resolve(self.spec))
        except GptcliError as exc:
            raise type(exc)(f"--embedding-model: {exc.message}") from None
        self.device = device
        # The server's --dtype, so that `classify --server` scores as a local run with that --dtype does;
        # int4 is for a causal LM's GGUF weights only.
        self.dtype = "auto" if dtype == "int4" else dtype
        self._lm = None
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gptcli-embeddings")

    async def embed(self, texts: list[str]) -> tuple[list, list[int]]:
        """Each text's vector (a float list) and its token count."""
        return await self.run(_embed, texts)

    async def run(self, function, *args):
        """``function(model, *args)`` on the embedding thread, once the model is loaded (classify's work)."""
        lm = await self._loaded()
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, lm, *args)

    async def _loaded(self):
        async with self._lock:  # concurrent first requests load it once
            if self._lm is None:
                self._lm = await asyncio.get_running_loop().run_in_executor(self._thread, self._load)
        return self._lm

    def _load(self):
        from gptcli.models import LoadOptions, load_model
        from gptcli.models.kinds import EMBEDDING

        try:
            return load_model(LoadOptions(self.spec, self.device, self.dtype), accept=(EMBEDDING,), command="serve")
        except GptcliError as exc:  # the server's configuration, not the request, is at fault
            raise ApiError(500, f"the embedding model could not be loaded: {exc.message}", type=SERVER_ERROR,
                           code="embedding_model_unavailable") from None

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _embed(lm, texts: list[str]) -> tuple[list, list[int]]:
    from gptcli.services.embed import EmbedParams, TextTooLong, embed

    try:
        vectors, lengths = embed(lm, texts, EmbedParams(EMBED_BATCH))  # `gptcli embed`'s code and defaults
    except TextTooLong as exc:
        raise ApiError(413, exc.at(f"input[{exc.index}]"), "input", "context_length_exceeded") from None
    return vectors.tolist(), lengths


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict:
    embedder: Embedder = request.app.state.served.embedder
    name = check_model(body.model, embedder.name)
    texts = _checked_texts(body)
    vectors, lengths = await embedder.embed(texts)
    if body.dimensions is not None and body.dimensions != len(vectors[0]):
        raise ApiError(400, f"'dimensions' {body.dimensions} is not supported: {name.id} gives vectors of "
                            f"{len(vectors[0])}; leave it out", "dimensions", "unsupported_parameter")
    data = [{"object": "embedding", "index": index, "embedding": _encoded(vector, body.encoding_format)}
            for index, vector in enumerate(vectors)]
    tokens = sum(lengths)
    return {"object": "list", "data": data, "model": name.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _checked_texts(body: EmbeddingRequest) -> list[str]:
    texts = body.texts()
    if len(texts) > MAX_INPUTS:
        raise bad_request(f"'input' holds {len(texts)} texts; send at most {MAX_INPUTS} per request", "input")
    for index, text in enumerate(texts):
        if not text:
            raise bad_request(f"input[{index}] is empty; every input must be a non-empty string", "input")
    return texts


def _encoded(vector: list[float], encoding: str):
    """The vector as floats, or as OpenAI's base64 of little-endian float32 (the openai client's default)."""
    if encoding == "float":
        return vector
    import numpy

    return base64.b64encode(numpy.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
