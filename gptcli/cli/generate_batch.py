"""generate's side of OpenAI Batch files: records read as requests with their own settings,
and results written back as OpenAI's result lines (``--output-format openai-batch``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gptcli.errors import InputError, UsageError


@dataclass(frozen=True)
class ItemJob:
    """What one input runs with: the run's settings, or a batch line's own where it gives them."""

    params: object  # services.generate.GenerationParams
    max_new_tokens: int
    raw: bool


def batch_items(records, item_type) -> list:
    """Items from the records of an OpenAI Batch file (all of them must be batch lines)."""
    from gptcli import openai_batch
    from gptcli.services.prompting import Prompt

    items, seen = [], {}
    for record in records:
        if not openai_batch.is_batch_record(record.fields):
            raise InputError(f"{record.where}: not an OpenAI batch line (needs custom_id, url and body) while "
                             f"{records[0].where} is one; one file holds one kind of record")
        request = openai_batch.parse(record.fields, record.where)
        if request.custom_id in seen:
            raise InputError(f"{record.where}: custom_id {request.custom_id!r} repeats {seen[request.custom_id]}; "
                             f"custom_ids must be unique")
        seen[request.custom_id] = record.where
        prompt = Prompt(text=request.prompt, messages=request.messages, where=record.where)
        items.append(item_type(request.custom_id, prompt, {"custom_id": request.custom_id}, batch=request))
    return items


def job_for(item, params, max_new_tokens: int, raw: bool) -> ItemJob:
    """The item's settings: a batch line's body over the command line's (which stand where it is silent).

    Raises:
        InputError: the line's settings cannot run (named by its body field).
    """
    from gptcli import openai_batch

    request = getattr(item, "batch", None)
    if request is None:
        return ItemJob(_with_record_schema(item, params), max_new_tokens, raw)
    given = request.settings
    sampling = replace(params.sampling, **{k: given[k] for k in ("temperature", "top_p", "seed", "presence_penalty",
                                                               "frequency_penalty") if k in given})
    job = ItemJob(replace(params, sampling=sampling, stop=given.get("stop", params.stop),
                          num_samples=given.get("n", params.num_samples),
                          constraint=given.get("response_format", params.constraint)),
                  given.get("max_completion_tokens", given.get("max_tokens", max_new_tokens)),
                  raw or request.url == openai_batch.COMPLETIONS_URL)
    try:
        sampling.validate()
    except UsageError as exc:  # the sampler names flags; here the line's body fields set them
        raise InputError(f"{item.prompt.where}: body settings: {_json_names(exc.message)}") from None
    if job.params.num_samples > 1 and sampling.greedy:
        raise InputError(f"{item.prompt.where}: body.n above 1 needs a temperature above 0")
    if job.params.constraint is not None and job.params.stop:
        raise InputError(f"{item.prompt.where}: body.stop cannot be combined with a response_format: a stop "
                         f"string could cut the output before it is complete")
    return job


def _with_record_schema(item, params):
    """The run's settings, with the record's own ``schema`` field as its output constraint."""
    if "schema" not in item.fields:
        return params
    from gptcli.engine.constraints import ConstraintError, json_schema

    where = item.prompt.where
    try:
        constraint = json_schema(item.fields["schema"])
    except ConstraintError as exc:
        raise InputError(f"{where}: field 'schema': {exc}") from None
    if params.stop:
        raise InputError(f"{where}: field 'schema' cannot be combined with --stop: a stop string could cut "
                         f"the output before it is complete")
    return replace(params, constraint=constraint)


def _json_names(message: str) -> str:
    """The sampler's flag names (--top-p) as the body's fields (top_p)."""
    import re

    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


class BatchResultSink:
    """Writes one OpenAI result line per request, once all its choices are done; resumes by custom_id."""

    def __init__(self, output: str | None, run, overwrite: bool, model: str, jobs: dict):
        from gptcli.cli.sink import ResultSink

        self.results = ResultSink(output, True, run, ("custom_id",), overwrite)
        self.model, self.jobs = model, jobs
        self._choices: dict = {}
        self.length_stops: list[int] = []
        self.incomplete = 0  # constrained choices cut at their limit: they do not parse

    def is_done(self, item_id) -> bool:
        return self.results.is_done((item_id,))

    def write(self, item, completion) -> None:
        from gptcli import openai_batch

        if completion.finish_reason == "length":
            self.length_stops.append(completion.generated_tokens)
            self.incomplete += self.jobs[item.id].params.constraint is not None
        choices = self._choices.setdefault(item.id, [])
        choices.append(completion)
        if len(choices) == self.jobs[item.id].params.num_samples:
            del self._choices[item.id]
            self.results.emit(openai_batch.result_line(item.id, item.batch.url, self.model, choices), "")

    def finish_note(self, total: int, max_new_tokens: int) -> None:
        from gptcli import console
        from gptcli.cli.structured import incomplete_note

        incomplete_note(self.incomplete, total)
        if self.length_stops:
            console.warn(f"{len(self.length_stops)} of {total} choices stopped at their token limit "
                         f"(finish_reason \"length\"); raise max_tokens for longer output")

    def close(self) -> None:
        self.results.close()
