"""Perplexity on eval rows, through the functions `gptcli eval perplexity` uses.

A row is scored on what training teaches the model to produce, consistently with
`gptcli eval perplexity` on the same file: a ``text`` row on every token after its first
(as the command scores any text); a prompt/completion, instruction or chat row on its
completion, output or assistant turns and the EOS that ends each, the rest being context.
Rows are rendered and tokenized by finetune's own functions (``tokens``), so the layout is
the one the model was trained in; nothing is cut at --max-length (long rows are windowed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gptcli.finetune import data as fmt

COVERS = {  # what the figure of each format scores, for the model card
    fmt.TEXT: "every token of each text after its first, as `gptcli eval perplexity` scores any text "
              "(the EOS that training appends is not counted)",
    fmt.PROMPT_COMPLETION: "the completion tokens and the EOS that ends each; the prompt is context only",
    fmt.INSTRUCTION: "the output tokens and the EOS that ends each; the instruction is context only",
    fmt.MESSAGES: "the assistant turns and the EOS that ends each; the other turns are context only",
}
FIELDS = {fmt.TEXT: ("text",), fmt.PROMPT_COMPLETION: ("prompt", "completion"),
          fmt.INSTRUCTION: ("instruction", "input", "output"), fmt.MESSAGES: ("messages",)}


@dataclass(frozen=True)
class Figures:
    """Mean loss per scored token over some rows, and its perplexity."""

    texts: int
    tokens: int
    mean_loss: float
    perplexity: float

    def to_dict(self) -> dict:
        return asdict(self)


def scored_tokens(row: fmt.Row, tokenizer):
    """The tokens of ``row`` and which count (a ``perplexity.Tokens``), as described above."""
    from gptcli.finetune import tokens
    from gptcli.services.perplexity import Tokens, text_tokens

    if row.format in (fmt.TEXT, fmt.LABELLED):
        return text_tokens(tokenizer, row.fields["text"])
    text, spans, chat = tokens.render(row, tokenizer)
    example = tokens.tokenize(text, spans, chat, tokenizer, row.where)
    return Tokens(example.input_ids, [label != tokens.IGNORE for label in example.labels])


def measure(lm, rows: list[fmt.Row], batch_size: int = 8) -> Figures | None:
    """The mean loss and perplexity of the causal LM ``lm`` over ``rows`` (None: no token to score)."""
    from gptcli.services import metrics
    from gptcli.services.perplexity import PerplexityParams, sequence_losses

    sequences = [scored_tokens(row, lm.tokenizer) for row in rows]
    results = list(sequence_losses(lm, sequences, PerplexityParams(batch_size)))
    tokens = [result.tokens for result in results]
    if not sum(tokens):
        return None
    loss = metrics.mean_loss([result.loss or 0.0 for result in results], tokens)
    return Figures(len(rows), sum(tokens), loss, metrics.perplexity(loss))


def eval_record(row: fmt.Row) -> dict:
    """A row as `gptcli eval perplexity --data` reads it back: its format's fields only."""
    return {name: row.fields[name] for name in FIELDS[row.format] if name in row.fields}
