"""`gptcli chat`: a conversation with a model, at the terminal or from a script."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gptcli.cli import common
from gptcli.cli import options as opt
from gptcli.errors import InputError, UsageError


def chat(
    model: opt.Model = None,
    server: opt.Server = None,
    adapter: opt.Adapter = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    system: opt.System = None,
    max_new_tokens: opt.MaxNewTokens = 512,
    temperature: opt.Temperature = 0.0,
    top_p: opt.TopP = 1.0,
    top_k: opt.TopK = 0,
    min_p: opt.MinP = 0.0,
    repetition_penalty: opt.RepetitionPenalty = 1.0,
    seed: opt.Seed = None,
    history_file: Annotated[Optional[str], typer.Option(
        envvar="GPTCLI_CHAT_HISTORY", show_envvar=True, rich_help_panel=opt.INPUT_PANEL,
        help="Where the lines typed at the terminal are kept (Up recalls them). Default: $XDG_STATE_HOME/gptcli/"
             "chat_history, else ~/.local/state/gptcli/chat_history; /dev/null keeps none.")] = None,
    verbose: opt.Verbose = False,
) -> None:
    """Chat with a model: replies stream as they are made, through its chat template.

    At a terminal: Enter sends; Esc then Enter (or Alt+Enter) starts a new line;
    Up recalls earlier lines. Ctrl-C stops a reply (the session goes on) or
    clears the line; Ctrl-C twice at an empty prompt, Ctrl-D or /exit ends it.

    Commands: /system TEXT, /image PATH (attaches an image, a path or an http(s)
    URL, to the next message, for an image-text-to-text model), /reset, /save FILE
    (one `messages` record, which `gptcli generate --input FILE` reads; images as
    image_url parts naming their paths), /load FILE, /help, /exit; //TEXT sends a
    message that starts with /.

    A conversation longer than the model's context drops its oldest turns (the
    system prompt stays), with a notice on stderr.

    With stdin not a terminal, each line is a message (or a command) and each
    reply one line on stdout: its newlines written as \\n, backslashes as \\\\.

    Examples:

      gptcli chat

      gptcli chat --system "Answer in one sentence." --temperature 0.7 --seed 1

      printf 'hi\\nwhat did I say?\\n' | gptcli chat

      printf 'hello\\n/save talk.jsonl\\n' | gptcli chat

      gptcli generate --input talk.jsonl    # the saved conversation, continued

      gptcli chat --model HuggingFaceTB/SmolVLM-256M-Instruct   # then: /image photo.png

      gptcli chat --server http://127.0.0.1:8000   # a running `gptcli serve`
    """
    from gptcli import signals
    from gptcli.cli import chat_repl
    from gptcli.cli.chat_session import Session
    from gptcli.services.conversation import Conversation

    settings = _settings(system, max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed)
    common.check_engine(engine)
    if server:
        common.check_server_args(adapter=adapter, device=device, dtype=dtype, engine=engine,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    at_terminal = chat_repl.interactive()
    history = chat_repl.history_path(history_file) if at_terminal else None
    replier = _remote(server, model, settings) if server else _local(
        model, adapter, device, dtype, trust_remote_code, allow_pickle, settings, engine)
    signals.set_stop_note("the conversation ends here (/save FILE keeps one)")
    session = Session(replier, Conversation(system), max_new_tokens)
    try:
        if at_terminal:
            chat_repl.run_terminal(session, history, replier.model_name)
        else:
            chat_repl.run_lines(session)
    finally:
        replier.close()


def _settings(system, max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed):
    """The replies' settings, checked before any model loads. Sampling without --seed draws the
    session's seed here, so each turn's samples follow from it (locally and through a server alike)."""
    import secrets

    from gptcli import textio
    from gptcli.engine.sampling import SamplingParams
    from gptcli.services.conversation import ChatSettings

    sampling = SamplingParams(temperature, top_p, top_k, min_p, repetition_penalty, seed=seed)
    sampling.validate()
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if system is not None:
        textio.check_argument(system, "--system")
    if not sampling.greedy and seed is None:
        from dataclasses import replace

        sampling = replace(sampling, seed=secrets.randbits(32))
    return ChatSettings(sampling, max_new_tokens)


def _local(model, adapter, device, dtype, trust_remote_code, allow_pickle, settings, engine):
    from gptcli.models import load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.loader import LoadOptions
    from gptcli.services.chat import LocalChat

    options = LoadOptions(model, device, dtype, trust_remote_code, adapter, allow_pickle=allow_pickle, engine=engine)
    lm = load_model(options, accept=(CAUSAL_LM,), command="chat")
    if not getattr(lm.tokenizer, "chat_template", None):
        raise InputError(f"{lm.name} has no chat template, which `gptcli chat` needs to tell the turns apart; "
                         f"use a chat (instruct) model, or `gptcli generate --raw` for plain text")
    return LocalChat(lm, settings)


def _remote(server: str, model: str | None, settings):
    from gptcli.cli.chat_remote import RemoteChat
    from gptcli.cli.remote import served_model
    from gptcli.client import ServerClient

    info = served_model(server, model, "generate")  # the server is up and has it, before the first turn
    return RemoteChat(ServerClient(server), model, info["model"], settings, info.get("takes_images"))
