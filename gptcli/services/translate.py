"""Translation, line-true: N lines in, N lines out, blank lines kept blank.

Each non-blank line is one unit. A line longer than the model can take at once
(or than a segment should be) is split into sentences (then words, then tokens)
that fit, the segments of many lines are translated together in batches, and
each line's segments are joined back into one output line. Nothing is cut.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

from gptcli.errors import InputError, UsageError
from gptcli.services import chunking, langcheck, textclean
from gptcli.services.languages import Route, language_name, plan_route
from gptcli.services.records import ItemResult
from gptcli.services.text2text import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Output, Request, Runner, RunStats

SEGMENT_TOKENS = 256  # the longest segment sent at once: translation models are trained on sentences
LINES_PER_WINDOW = 64  # lines gathered before their segments are batched (output flows per window)
MIN_SEGMENT_TOKENS = 8
# Decoding for causal LMs (measured on the train splits: docs/summarize-translate-decoding.md). A segment
# holds no newline, so its translation ends at the first one; what follows is a note or a second answer.
STOP = ("\n",)
REPETITION_PENALTY = 1.0
NO_REPEAT_NGRAM = 0
# Causal LMs' default penalties on the tokens generated so far: chosen on train splits, held-out en->ro chrF
# 9.2 -> 12.5 and en->fi 5.2 -> 9.8, lines cut by the budget 29% -> 14% (benchmarks/results/task_penalties.txt).
# Loops are the commonest failure of a small model translating; the source is never penalised.
PRESENCE_PENALTY = 0.5
FREQUENCY_PENALTY = 1.0


@dataclass(frozen=True)
class TranslateParams:
    target: str
    source: str | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None  # per segment; None: twice its length plus a margin
    segment_tokens: int = SEGMENT_TOKENS
    max_batch_tokens: int | None = None  # see GenerationParams
    # Causal LMs: OpenAI-style penalties on the tokens generated so far (not the source); see SamplingParams
    presence_penalty: float = PRESENCE_PENALTY
    frequency_penalty: float = FREQUENCY_PENALTY

    @property
    def row_tokens(self) -> int:
        """The tokens one batch row is sized for when the batch size is chosen from free memory."""
        return 3 * self.segment_tokens


@dataclass
class Translation:
    """The translation of input line ``index`` (empty for a blank line).

    ``finish_reason``: "length" when a segment stopped at its token limit before it ended (the
    translation is cut), "stop" when gptcli ended a segment itself (at its newline, at as many
    sentences as its source has, or where it began to repeat itself), "eos" when every segment
    ended on its own, None for a blank line (nothing to run).
    """

    index: int
    text: str
    segments: int
    input_tokens: int
    generated_tokens: int
    finish_reason: str | None = None
    wrong_language: bool = False  # a causal LM wrote another language, again after one retry

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    """One model call's worth of a line, for tracing: what the model read and wrote."""

    line: int
    source: str
    request: str
    output: str


@dataclass
class Translator:
    """A loaded model with its route for one pair: call ``translate`` with lines."""

    lm: object
    route: Route
    params: TranslateParams
    stats: RunStats = field(default_factory=RunStats)
    trace: Callable[[Segment], None] | None = None

    def translate(self, lines: Iterable[str]) -> Iterator[Translation]:
        """Translations of ``lines`` in order, one per line (blank for blank)."""
        sampling = _sampling(self.params)
        sampling.validate()
        runner = Runner(self.lm, self.params.batch_size, self.route.generate_kwargs, self.stats,
                        self.params.max_batch_tokens, stop=STOP, sampling=sampling)
        budget = self.segment_budget()
        counter = chunking.TokenCounter(self.lm.tokenizer)
        window: list[tuple[int, str]] = []
        for index, line in enumerate(lines):
            window.append((index, line))
            if len(window) >= LINES_PER_WINDOW:
                yield from self._window(window, runner, budget, counter)
                window = []
        if window:
            yield from self._window(window, runner, budget, counter)

    def segment_budget(self) -> int:
        """The most source tokens in one segment: what fits with the prompt and the output."""
        context = self.lm.context_length
        budget = self.params.segment_tokens
        output_limit = Runner(self.lm).output_limit
        if output_limit is not None:  # the decoder writes ~2x the segment (see _max_new): split finer to fit
            if (self.params.max_new_tokens or 0) > output_limit:
                raise UsageError(f"--max-new-tokens {self.params.max_new_tokens} is more than {self.lm.name} can "
                                 f"write per segment (its decoder has {output_limit} positions); use "
                                 f"--max-new-tokens {output_limit} or less")
            budget = min(budget, max(MIN_SEGMENT_TOKENS, (output_limit - 16) // 2))
        if context is None:
            return budget
        overhead = len(Runner(self.lm).encode(self._request_text("")))
        room = context - overhead
        if Runner(self.lm).is_causal:  # the output shares the context: keep room for ~2x the input
            room = (room - 16) // 3
        if room < MIN_SEGMENT_TOKENS:
            raise InputError(f"{self.lm.name}'s context of {context} tokens leaves no room to translate "
                             f"after the {overhead}-token prompt; use a model with a longer context")
        return min(budget, room)

    def _window(self, window, runner: Runner, budget: int, counter) -> Iterator[Translation]:
        pieces = {index: chunking.split_to_fit(line, budget, counter) for index, line in window}
        flat = [(index, piece) for index, _line in window for piece in pieces[index]]
        requests = [Request(self._request_text(piece), self._max_new(counter.count(piece)))
                    for _index, piece in flat]
        outputs = runner.run(requests) if requests else []
        if runner.is_causal:
            outputs = [self._clean(piece, output) for (_index, piece), output in zip(flat, outputs)]
            outputs = self._retry_wrong_language(runner, [piece for _index, piece in flat], requests, outputs)
        by_line: dict[int, list] = {index: [] for index, _line in window}
        for (index, piece), request, output in zip(flat, requests, outputs):
            by_line[index].append(output)
            if self.trace is not None:
                self.trace(Segment(index, piece, request.text, output.text))
        for index, _line in window:
            outs = by_line[index]
            text = chunking.rejoin([_one_line(o.text) for o in outs])
            yield Translation(index, text, len(outs), sum(o.input_tokens for o in outs),
                              sum(o.generated_tokens for o in outs), _finish_reason(outs),
                              any(o.wrong_language for o in outs))

    def _request_text(self, piece: str, insist: bool = False) -> str:
        if self.route.family != "causal-lm":
            return self.route.prefix + piece
        target = language_name(self.route.target)
        source = f" from {language_name(self.route.source)}" if self.route.source else ""
        if insist:  # the retry after a wrong-language answer: name the language again, after the text
            return (f"{piece}\n\nTranslate the text above{source} into {target}. Write in {target} only, "
                    f"not in {language_name(self.route.source) if self.route.source else 'the original language'}.")
        return (f"Translate the following text{source} into {target}. "
                f"Reply with the {target} translation only.\n\n{piece}")

    def _clean(self, piece: str, output: Output) -> Output:
        """A causal LM's translation without artefacts ("Romanian:") and loops, with no more sentences than
        its source; "stop" when gptcli ended it there, "length" (with a cut last sentence dropped) when the
        budget did."""
        text = textclean.strip_artefacts(output.text, self._request_text(""))
        text, looped = textclean.cut_repetition(text)
        text, capped = textclean.first_sentences(text, max(1, len(textclean.sentence_spans(piece))))
        reason = FINISH_STOP if looped or capped else output.finish_reason
        if reason == FINISH_LENGTH:
            text = textclean.drop_unfinished(text)
        return Output(text, output.input_tokens, output.generated_tokens, reason)

    def _retry_wrong_language(self, runner: Runner, pieces: list[str], requests: list[Request],
                              outputs: list[Output]) -> list[Output]:
        """Segments written in another language get one more try with a firmer instruction; those still wrong
        are marked (the command warns)."""
        target, source = self.route.target.split("-")[0].lower(), self.route.source
        wrong = [i for i, o in enumerate(outputs) if langcheck.check(o.text, target, source) == langcheck.WRONG]
        if not wrong:
            return outputs
        again = runner.run([Request(self._request_text(pieces[i], insist=True), requests[i].max_new_tokens)
                            for i in wrong])
        fixed = list(outputs)
        for i, output in zip(wrong, again):
            output = self._clean(pieces[i], output)
            output.generated_tokens += outputs[i].generated_tokens
            if langcheck.check(output.text, target, source) == langcheck.WRONG:
                output = outputs[i]
                output.wrong_language = True
            fixed[i] = output
        return fixed

    def _max_new(self, source_tokens: int) -> int:
        if self.params.max_new_tokens is not None:
            return self.params.max_new_tokens
        return 2 * source_tokens + 16


def _finish_reason(outputs: list) -> str | None:
    if not outputs:
        return None
    if any(o.finish_reason == FINISH_LENGTH for o in outputs):
        return FINISH_LENGTH
    return FINISH_STOP if any(o.finish_reason == FINISH_STOP for o in outputs) else FINISH_EOS


def _sampling(params: TranslateParams):
    from gptcli.engine.sampling import SamplingParams

    return SamplingParams(repetition_penalty=REPETITION_PENALTY, no_repeat_ngram_size=NO_REPEAT_NGRAM,
                          presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty)


def _one_line(text: str) -> str:
    """A segment holds no newline, so its translation must not either: keep the lines aligned."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


RESULT_FIELDS = ("translation", "segments", "input_tokens", "generated_tokens", "finish_reason")
WRONG_LANGUAGE = "wrong_language"  # the mark of a line still in another language after the retry


def translation_results(translator: Translator, lines: list[str]) -> Iterator[ItemResult]:
    """Each line's result as `gptcli translate` writes it, locally and through a server.

    Returns:
        An iterator of ItemResults in input order: the RESULT_FIELDS of the record, marked
        WRONG_LANGUAGE when a causal LM wrote another language (the command sums those up).
    """
    for result in translator.translate(lines):
        fields = dict(zip(RESULT_FIELDS, (result.text, result.segments, result.input_tokens,
                                          result.generated_tokens, result.finish_reason)))
        yield ItemResult(fields, marks={WRONG_LANGUAGE: True} if result.wrong_language else {})


def make_translator(lm, params: TranslateParams, trace: Callable[[Segment], None] | None = None) -> Translator:
    """A Translator for ``lm`` and the pair in ``params``.

    Raises:
        InputError: the model cannot translate the pair, needs --from, or is not a translation model.
    """
    return Translator(lm, plan_route(lm, params.target, params.source), params, trace=trace)
