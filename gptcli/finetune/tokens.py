"""Rows as the model sees them: rendered, tokenized, loss-masked, EOS-terminated, packed.

Loss masks are computed on characters, then mapped to tokens with the
tokenizer's offsets: a token carries loss when it covers any character of a
completion / assistant turn. This avoids the boundary errors of tokenizing the
prompt and the answer apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gptcli.errors import InputError
from gptcli.finetune import data as fmt
from gptcli.services.prompting import render_chat

IGNORE = -100  # the label torch's cross-entropy skips


@dataclass
class Example:
    """One tokenized example; ``labels`` is IGNORE where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    where: str
    position_ids: list[int] = field(default_factory=list)  # set on packed rows only
    cut: bool = False

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class Encoded:
    examples: list[Example]
    cut: int = 0  # rows longer than --max-length
    dropped: int = 0  # rows left with no loss-carrying token after the cut


def encode_rows(rows: list[fmt.Row], tokenizer, max_length: int, train_on_prompt: bool) -> Encoded:
    """Tokenize every row; count the rows cut at ``max_length`` and drop those left without loss."""
    encoded = Encoded([])
    for row in rows:
        text, spans, chat = render(row, tokenizer)
        example = tokenize(text, [(0, len(text))] if train_on_prompt else spans, chat, tokenizer, row.where)
        if len(example.input_ids) > max_length:
            example = Example(example.input_ids[:max_length], example.labels[:max_length], row.where, cut=True)
            encoded.cut += 1
        if example.loss_tokens == 0:
            encoded.dropped += 1
            continue
        encoded.examples.append(example)
    return encoded


def render(row: fmt.Row, tokenizer) -> tuple[str, list[tuple[int, int]], bool]:
    """The text of a row, the character spans that carry loss, and whether it is chat-rendered."""
    f = row.fields
    if row.format == fmt.TEXT:
        return f["text"], [(0, len(f["text"]))], False
    if row.format == fmt.PROMPT_COMPLETION:
        return f["prompt"] + f["completion"], [(len(f["prompt"]), len(f["prompt"]) + len(f["completion"]))], False
    if row.format == fmt.INSTRUCTION:
        return _render_instruction(row, tokenizer)
    return _render_chat(f["messages"], tokenizer, row.where)


def _render_instruction(row: fmt.Row, tokenizer) -> tuple[str, list[tuple[int, int]], bool]:
    f = row.fields
    request = f["instruction"] + (f"\n\n{f['input']}" if f.get("input") else "")
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": request}, {"role": "assistant", "content": f["output"]}]
        return _render_chat(messages, tokenizer, row.where)
    # No chat template: the Alpaca layout, which base models have seen widely.
    prompt = f"### Instruction:\n{request}\n\n### Response:\n"
    return prompt + f["output"], [(len(prompt), len(prompt) + len(f["output"]))], False


def _render_chat(messages: list[dict], tokenizer, where: str) -> tuple[str, list[tuple[int, int]], bool]:
    """Render with the chat template; each assistant turn's span is what its message adds."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{where}: 'messages' rows need a model with a chat template, and this one has none; "
                         f"use prompt/completion rows, or a chat model")
    text = _template(tokenizer, messages, where, generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # What the model is shown before it answers (as `generate` prompts it), then through its answer.
        before = _template(tokenizer, messages[:index], where, generation_prompt=True) if index else ""
        through = _template(tokenizer, messages[: index + 1], where, generation_prompt=False)
        if not text.startswith(through) or not through.startswith(before):
            raise InputError(f"{where}: the chat template renders this conversation differently "
                             f"turn by turn, so assistant turns cannot be found; use --train-on-prompt")
        spans.append((len(before), len(through)))
    eos = tokenizer.eos_token
    if eos and text.rstrip().endswith(eos):
        text = text.rstrip()  # the template already ends the turn with EOS: drop what trails it
    return text, [(start, min(end, len(text))) for start, end in spans], True


def _template(tokenizer, messages: list[dict], where: str, generation_prompt: bool) -> str:
    # The one renderer, shared with inference: same layout, and the same time and size limits.
    return render_chat(tokenizer, messages, where, add_generation_prompt=generation_prompt)


def tokenize(text: str, spans: list[tuple[int, int]], chat: bool, tokenizer, where: str) -> Example:
    """Token ids and labels; EOS is appended unless the text already ends with it, and always carries loss."""
    # Chat templates write their own BOS; plain text gets the tokenizer's special tokens.
    encoding = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    labels = [token if _covered(start, end, spans) else IGNORE
              for token, (start, end) in zip(ids, encoding["offset_mapping"])]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no EOS token, so a tuned model could not learn to stop; "
                         "use a model whose tokenizer defines eos_token")
    if not ids or ids[-1] != eos:
        ids.append(eos)
        labels.append(eos)
    labels[-1] = eos
    labels[0] = IGNORE  # nothing predicts the first token (and in a pack, it must not be the last one's target)
    return Example(ids, labels, where)


def _covered(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return end > start and any(start < span_end and end > span_start for span_start, span_end in spans)


def pack(examples: list[Example], max_length: int) -> list[Example]:
    """Greedy first-fit packing in order; position ids restart at 0 for each example.

    transformers reads restarting position ids (with no attention mask) as separate
    sequences and builds a block-diagonal causal mask, so examples do not attend
    to each other.
    """
    packed: list[Example] = []
    current = Example([], [], "packed")
    for example in examples:
        if current.input_ids and len(current.input_ids) + len(example.input_ids) > max_length:
            packed.append(current)
            current = Example([], [], "packed")
        current.input_ids += example.input_ids
        current.labels += example.labels
        current.position_ids += list(range(len(example.input_ids)))
        current.where = example.where if current.where == "packed" else current.where
    if current.input_ids:
        packed.append(current)
    return packed


def encode_labelled(rows: list[fmt.Row], tokenizer, max_length: int, labels: list[str]) -> Encoded:
    """Classification rows: token ids of the text, and the class index as the one label."""
    index = {name: number for number, name in enumerate(labels)}
    encoded = Encoded([])
    for row in rows:
        ids = tokenizer(row.fields["text"], add_special_tokens=True)["input_ids"]
        label = index.get(str(row.fields["label"]))
        if label is None:
            raise InputError(f"{row.where}: label {row.fields['label']!r} is not among the training labels "
                             f"({', '.join(labels)})")
        encoded.cut += len(ids) > max_length
        encoded.examples.append(Example(list(ids[:max_length]), [label], row.where, cut=len(ids) > max_length))
    return encoded


def show(example: Example, tokenizer, number: int) -> str:
    """An example as the model sees it, the loss-carrying tokens between [[ and ]]."""
    parts, run, flag = [], [], None
    for token, label in zip(example.input_ids, example.labels):
        carries = label != IGNORE
        if flag is not None and carries != flag:
            parts.append(_decode(tokenizer, run, flag))
            run = []
        run.append(token)
        flag = carries
    parts.append(_decode(tokenizer, run, bool(flag)))
    head = (f"--- example {number} ({example.where}): {len(example.input_ids)} tokens, "
            f"{example.loss_tokens} carry loss{' (cut at --max-length)' if example.cut else ''}")
    return head + "\n" + "".join(parts) + "\n"


def show_labelled(example: Example, tokenizer, number: int, label: str) -> str:
    """A classification example: its tokens as the model sees them, and the class it must learn."""
    text = tokenizer.decode(example.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return f"--- example {number} ({example.where}): {len(example.input_ids)} tokens, label {label!r}\n{text}\n"


def _decode(tokenizer, ids: list[int], carries: bool) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return f"[[{text}]]" if carries else text
