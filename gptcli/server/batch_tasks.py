"""gptcli's routes for `gptcli summarize|translate|classify --server`: a part of a run in, its results out.

A command sends its items in parts, in order, each with the command's options as its service's
params (``auto_batch``: the batch size is the server's to choose from its free memory). The
answer holds every item's result as the command writes it (``services.records.ItemResult``:
the record's fields, the warnings about it), the run's notes and the work's stats. The work is
the service a local run calls, on the task thread (the causal LM) or on the embedding model's
own, so a greedy result is the one a local run writes. Bad input and usage errors come back as
400 (``tasks.refused``), a runtime failure as 500 with its message: the client raises each again.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from gptcli.errors import GptcliError, InputError, UsageError
from gptcli.server.errors import SERVER_ERROR, ApiError, bad_request
from gptcli.server.naming import ServedName, check_model
from gptcli.server.tasks import refused

router = APIRouter()
TASKS = ("generate", "summarize", "translate", "classify")


class _Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = None  # None: the model the server runs this task with
    params: dict = {}  # the service's params (SummarizeParams ...) as asdict gives them
    auto_batch: bool = False


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    where: str = "the document"


class SummarizeTask(_Task):
    documents: list[Document]


class TranslateTask(_Task):
    lines: list[str]


class ClassifyTask(_Task):
    texts: list[str]
    start: int = Field(0, ge=0)  # non-empty texts of the run before these: errors number texts from there


def task_model(served, task: str, requested: Optional[str]) -> tuple[ServedName, bool]:
    """The served model ``task`` runs with when a command asks for ``requested`` (None: the server's
    choice), and whether it is the embedding model: classify's default, and what it uses when
    ``requested`` names it; every other task, and classify asked for the causal LM, use the causal LM.

    Raises:
        ApiError: 404 naming what this server has, 400 for an unknown task.
    """
    if task not in TASKS:
        raise bad_request(f"'task' must be one of {', '.join(TASKS)}, got {task!r}", "task")
    embedder = served.embedder
    if task == "classify" and embedder is not None:
        name = embedder.name if requested is None else check_model(requested, served.name, embedder.name)
        return name, name is embedder.name
    return (served.name if requested is None else check_model(requested, served.name)), False


@router.post("/gptcli/v1/summarize")
async def summarize_task(body: SummarizeTask, request: Request) -> dict:
    from gptcli.services.summarize import SummarizeParams

    served = request.app.state.served
    task_model(served, "summarize", body.model)
    return await served.host.run_task(_summarize, _params(SummarizeParams, body.params), body)


@router.post("/gptcli/v1/translate")
async def translate_task(body: TranslateTask, request: Request) -> dict:
    from gptcli.services.translate import TranslateParams

    served = request.app.state.served
    task_model(served, "translate", body.model)
    return await served.host.run_task(_translate, _params(TranslateParams, body.params), body)


@router.post("/gptcli/v1/classify")
async def classify_task(body: ClassifyTask, request: Request) -> dict:
    from gptcli.services.classify import ClassifyParams

    served = request.app.state.served
    _name, embedding = task_model(served, "classify", body.model)
    params = _params(ClassifyParams, body.params)
    if embedding:
        return await served.embedder.run(_classify, params, body)
    return await served.host.run_task(_classify, params, body)


def _answering(work):
    """``work`` (run on a model's thread) with its errors as the answers the client raises again."""
    @functools.wraps(work)
    def answer(*args):
        try:
            return work(*args)
        except (InputError, UsageError) as exc:
            raise refused(exc) from None
        except GptcliError as exc:  # a runtime failure of the task (exit 1 for the command)
            raise ApiError(500, exc.message, type=SERVER_ERROR, code="task_failed") from None

    return answer


@_answering
def _summarize(lm, params, body: SummarizeTask) -> dict:
    from gptcli.services.batching import auto_batched
    from gptcli.services.summarize import summary_results
    from gptcli.services.text2text import RunStats

    params, _chosen = auto_batched(params, lm, body.auto_batch, params.row_tokens)
    stats = RunStats()
    documents = [(document.text, document.where) for document in body.documents]
    return _answer(summary_results(lm, params, documents, stats), stats)


@_answering
def _translate(lm, params, body: TranslateTask) -> dict:
    from gptcli.services.batching import auto_batched
    from gptcli.services.languages import check_pair
    from gptcli.services.translate import make_translator, translation_results

    check_pair(params.target, params.source)
    params, _chosen = auto_batched(params, lm, body.auto_batch, params.row_tokens)
    translator = make_translator(lm, params)
    answer = _answer(translation_results(translator, body.lines), translator.stats)
    answer["notes"] = [translator.route.note] if translator.route.note else []
    answer["run"] = {"target": translator.route.target}
    return answer


@_answering
def _classify(lm, params, body: ClassifyTask) -> dict:
    from gptcli.services.batching import auto_batched
    from gptcli.services.classify import ClassifyStats, classification_results

    params, _chosen = auto_batched(params, lm, body.auto_batch, params.row_tokens)
    stats = ClassifyStats()
    return _answer(classification_results(lm, body.texts, params, stats, body.start), stats)


def _answer(results, stats) -> dict:
    return {"results": [result.to_dict() for result in results], "stats": asdict(stats)}


def _params(kind, fields: dict):
    """The service's params from their JSON (lists back to the tuples they were).

    Raises:
        ApiError: 400, a usage error, for a field the params do not have or a bad batch size.
    """
    try:
        params = kind(**{name: _tupled(value) for name, value in fields.items()})
    except TypeError as exc:
        raise refused(UsageError(f"unknown setting in 'params' ({exc})")) from None
    if not isinstance(params.batch_size, int) or params.batch_size < 1:
        raise refused(UsageError(f"batch size must be at least 1, got {params.batch_size!r}"))
    return params


def _tupled(value):
    return tuple(_tupled(item) for item in value) if isinstance(value, list) else value
