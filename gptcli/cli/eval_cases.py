"""`gptcli eval`: reading --data and --predictions and checking the options, before any model loads."""

from __future__ import annotations

from dataclasses import dataclass

from gptcli.cli import common
from gptcli.errors import InputError, UsageError

EXPECTED = "expected"  # the field each --output record keeps its reference under


@dataclass
class Case:
    """One --data record: the task's input item, and the reference its prediction is scored against."""

    item: object
    reference: str
    where: str


def read_cases(task: str, data: str, field: str, result_fields: tuple[str, ...], make_item) -> list[Case]:
    """Every record of --data, checked: a text, a reference in ``field``, no field the result would replace."""
    from gptcli import textio

    records = textio.read_records(data, "text")
    others = tuple(name for name in result_fields if name != field) + (EXPECTED,)
    common.refuse_result_fields(records, others, f"eval {task}")
    cases = []
    for r in records:
        text, reference = r.text("text"), r.text(field)
        cases.append(Case(make_item(r, text), reference.strip() if field == "label" else reference, r.where))
    return cases


def carried(record, field: str) -> dict:
    """The record's fields as its result carries them: the reference under EXPECTED, not under the result's name."""
    fields = {name: value for name, value in record.fields.items() if name != field}
    fields[EXPECTED] = record.fields[field]
    return fields


def labels_in(cases: list[Case], data: str) -> tuple[str, ...]:
    found = tuple(sorted({case.reference for case in cases}))
    if len(found) < 2:
        raise UsageError(f"{data} holds one label ({found[0]!r}); give the labels to choose from with "
                         f"--labels a,b or --labels-file FILE")
    return found


def check_references(cases: list[Case], chosen: tuple[str, ...], given: tuple[str, ...]) -> None:
    if not given:
        return
    unknown = next((case for case in cases if case.reference not in chosen), None)
    if unknown is not None:
        raise InputError(f"{unknown.where}: label {unknown.reference!r} is not one of the labels given "
                         f"({', '.join(chosen)}); add it, or fix the record")


def warn_examples_in_data(examples: tuple[tuple[str, str], ...], cases: list[Case]) -> None:
    """One stderr line when --examples texts are also scored: the figures would flatter the model."""
    from gptcli import console

    shown = {text.strip() for text, _label in examples}
    inside = sum(1 for case in cases if case.item.text.strip() in shown)
    if inside:
        console.warn(f"{inside} of the --data texts are also --examples: their scores flatter the model; "
                     f"take the examples from other rows")


def check_outputs(predictions, model, output, inputs: tuple, plot: str | None = None, overwrite: bool = False):
    from gptcli.cli.eval_report import check_plot
    from gptcli.outputs import check_output_path

    if predictions is not None and model is not None:
        raise UsageError("--predictions scores predictions already made, without a model; drop --model")
    if predictions is not None and output is not None:
        raise UsageError("--predictions already holds the predictions; drop --output")
    if output is not None:
        check_output_path(output, list(inputs))
    if plot is not None:
        check_plot(plot, overwrite)


def read_predictions(predictions: str, field: str, cases: list[Case]) -> list[str]:
    """The prediction of each case, from a results file joined to --data by id (every id once, no other)."""
    from gptcli.outputs import read_results

    by_id: dict = {}
    wanted = {case.item.id for case in cases}
    for where, record in read_results(predictions):
        if record["id"] not in wanted:
            raise InputError(f"{where}: id {record['id']!r} is not in --data; predictions and --data must hold "
                             f"the same ids")
        if record["id"] in by_id:
            raise InputError(f"{where}: id {record['id']!r} repeats {by_id[record['id']][0]}; ids must be unique")
        if not isinstance(record.get(field), str):
            raise InputError(f"{where}: field {field!r} must be a string, got "
                             f"{'nothing' if record.get(field) is None else type(record[field]).__name__}")
        by_id[record["id"]] = (where, record[field])
    missing = next((case for case in cases if case.item.id not in by_id), None)
    if missing is not None:
        raise InputError(f"{predictions}: no prediction for id {missing.item.id!r} ({missing.where}); predictions "
                         f"and --data must hold the same ids")
    return [by_id[case.item.id][1].strip() if field == "label" else by_id[case.item.id][1] for case in cases]


def load_options(model, adapter, device, dtype, trust_remote_code, allow_pickle, engine="transformers"):
    from gptcli.models.loader import LoadOptions

    return LoadOptions(model, device, dtype, trust_remote_code, adapter, allow_pickle=allow_pickle, engine=engine)
