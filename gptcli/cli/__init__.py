"""The Typer app. Commands live one per module and import nothing heavy at import time,
so `gptcli --help` stays instant."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gptcli import __version__
from gptcli.cli.options import VERBOSE_HELP

app = typer.Typer(
    name="gptcli",
    help="Hugging Face language models from the terminal: generate, chat, embed, classify, summarize, translate, "
         "eval, finetune, serve.\n\n"
         "Results go to stdout, everything else to stderr. Exit codes: 0 ok, 1 failure, 2 bad input, 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"gptcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_show_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    from gptcli import console, quiet

    console.set_verbose(verbose)
    quiet.configure(verbose)  # before any command imports torch or transformers


def _register() -> None:
    from gptcli.cli import generate
    from gptcli.cli import classify
    from gptcli.cli import finetune
    from gptcli.cli import summarize
    from gptcli.cli import translate
    from gptcli.cli import eval as eval_cli
    from gptcli.cli import serve

    app.command(name="generate", no_args_is_help=False)(generate.generate)
    app.command(name="classify", no_args_is_help=False)(classify.classify)
    from gptcli.cli import embed

    app.command(name="embed", no_args_is_help=False)(embed.embed)
    app.command(name="finetune")(finetune.finetune)
    app.command(name="summarize", no_args_is_help=False)(summarize.summarize)
    app.command(name="translate", no_args_is_help=False)(translate.translate)
    app.add_typer(eval_cli.app, name="eval")
    app.command(name="serve")(serve.serve)
    from gptcli.cli import chat

    app.command(name="chat", no_args_is_help=False)(chat.chat)


_register()
