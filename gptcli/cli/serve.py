"""`gptcli serve`: an OpenAI-compatible HTTP server for a model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gptcli.cli import options as opt
from gptcli.errors import UsageError

SERVER_PANEL = "Server"
LIMITS_PANEL = "Limits"


def serve(
    model: opt.Model = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    embedding_model: Annotated[Optional[str], typer.Option(
        rich_help_panel=opt.MODEL_PANEL,
        help="The model behind /v1/embeddings (loaded on its first request): a folder, a hub id, or the alias "
             "minilm (the packaged all-MiniLM-L6-v2, the default).")] = None,
    host: Annotated[str, typer.Option(rich_help_panel=SERVER_PANEL,
                                      help="Address to listen on; 0.0.0.0 for every interface (set --api-key).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, rich_help_panel=SERVER_PANEL,
                                      help="Port to listen on; 0 picks a free one (the ready line names it).")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(
        envvar="GPTCLI_API_KEY", show_envvar=True, rich_help_panel=SERVER_PANEL,
        help="Require 'Authorization: Bearer KEY' on every route but /health.")] = None,
    max_queued: Annotated[int, typer.Option(min=1, rich_help_panel=LIMITS_PANEL,
                                            help="Requests (one per choice) that may wait for a free row; past it "
                                                 "the server answers 429.")] = 64,
    max_request_bytes: Annotated[Optional[int], typer.Option(
        min=1024, rich_help_panel=LIMITS_PANEL,
        help="Largest request body accepted; past it, 413. Default: 4 MiB, or 64 MiB for a model that takes "
             "images (data URLs are a third larger than the image files).")] = None,
    batch_size: Annotated[int, typer.Option(min=0, rich_help_panel=LIMITS_PANEL,
                                            help="Requests generated together (rows of the running batch); 0 "
                                                 "chooses from the free memory.")] = 0,
    verbose: opt.Verbose = False,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (chat, completions, embeddings).

    Ready when stderr says "listening on ...". Ctrl-C or SIGTERM finish the requests in flight and stop.

    Examples:

      gptcli serve

      gptcli serve --model ./my-finetuned-model --port 8080 --api-key "$KEY"

      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused python my_openai_script.py
    """
    from gptcli import quiet, signals
    from gptcli.cli import common
    from gptcli.models.loader import LoadOptions
    from gptcli.server.app import ServeSettings
    from gptcli.server.launch import run

    if api_key is not None and not api_key.strip():  # `--api-key "$KEY"` with KEY unset must not serve openly
        raise UsageError("--api-key is empty; give the key clients must send, or leave the option out")
    common.check_engine(engine)
    settings = ServeSettings(host.strip(), port, api_key.strip() if api_key else None, max_queued,
                             max_request_bytes, verbose or quiet.verbose())  # `gptcli -v serve` too
    signals.set_stop_note("the server has stopped (requests in flight were finished or cancelled)")
    run(LoadOptions(model, device, dtype, trust_remote_code, allow_pickle=allow_pickle, engine=engine), settings,
        batch_size, embedding_model)
