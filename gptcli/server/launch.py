"""Start a server: bind, load, start the engine, serve, and stop it all in order."""

from __future__ import annotations

from gptcli import console
from gptcli.server.app import ServeSettings

ENGINE_STOP_SECONDS = 10  # after uvicorn has drained: only abandoned requests are left to cancel
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def run(load_options, settings: ServeSettings, batch_size: int, embedding_model: str | None) -> None:
    """Serve the model of ``load_options`` until SIGINT or SIGTERM.

    Raises:
        UsageError: the address cannot be bound, or a model spec is unusable (before any load).
        GptcliError: the model fails to load.
        KeyboardInterrupt: after a clean stop on a signal (exit 130 or 143 in ``__main__``).
    """
    from gptcli.server.embeddings import Embedder
    from gptcli.server.runner import bind, serve, url_of

    # Resolves the spec: a bad --embedding-model fails before the load.
    embedder = Embedder(embedding_model, load_options.device, load_options.dtype)
    sock = bind(settings.host, settings.port)
    try:
        served = _load(load_options, settings, batch_size, embedder)
    except BaseException:
        sock.close()
        raise
    if settings.host not in LOOPBACK and settings.api_key is None:
        console.warn(f"serving on {settings.host} without --api-key: anyone who can reach this machine can use it")
    from gptcli.server.app import create_app

    ready = f"listening on {url_of(sock)} (model {served.name.id})"
    serve(create_app(served, settings), sock, settings.verbose, ready, on_stop=lambda: _stop(served))


def _load(load_options, settings: ServeSettings, batch_size: int, embedder):
    from gptcli.models import load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.server.app import Served
    from gptcli.server.host import EngineHost
    from gptcli.server.naming import served_name

    lm = load_model(load_options, accept=(CAUSAL_LM,), command="serve")
    rows, max_batch_tokens = _batch_shape(lm, batch_size)
    host = EngineHost(lm, rows, max_batch_tokens, settings.max_queued).start()
    return Served(host, lm, served_name(lm.source), embedder)


def _batch_shape(lm, batch_size: int) -> tuple[int, int | None]:
    """Rows of the running batch, and its token budget: chosen from free memory unless given.

    Requests are not known in advance: a row is sized for a full context.
    """
    if batch_size:
        return batch_size, None
    from gptcli.services.batching import auto_batch_size, batch_token_budget, describe_auto_batch

    rows, budget = auto_batch_size(lm, lm.context_length or 2048), batch_token_budget(lm)
    console.log(describe_auto_batch(rows, budget))
    return rows, budget


def _stop(served) -> None:
    served.host.stop(ENGINE_STOP_SECONDS)
    if served.embedder is not None:
        served.embedder.close()
