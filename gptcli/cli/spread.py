"""`--num-processes N`, and `accelerate launch -m gptcli CMD ...`: a batch command's records spread over processes.

The first process checks the options, the input and the --output file as a one-process run does, then
torchrun starts N copies of the same command line (gloo meets them; each GPU gets one). Each copy, a
rank, takes every N-th of the records that have no result yet and writes their results to a part file of
its own beside the --output, resumed like any --output, so a rank killed part way loses nothing it wrote.
When all are done, rank 0 copies the parts into the --output in input order and removes them.

A batch job (``job``) is a command's run object with: ``output``, ``overwrite``, ``processes``, ``key_fields``,
``keys_of(item)`` (the result keys an item has), ``run_record_of(items)``, ``open_final(run)`` (the sink of the
--output), ``part(output)`` (the same job writing to a part file) and ``run_here(items, load_options, recorded)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from gptcli.errors import GptcliError, UsageError

PARTS_SUFFIX = ".gptcli-parts"  # the folder beside the --output where the ranks write their parts
PART_GLOB = "part-*.jsonl"


@dataclass(frozen=True)
class Rank:
    """This process's place among the processes a launcher (torchrun, accelerate) started."""

    index: int
    world: int
    local: int  # its index on this machine: which GPU it takes


def this_rank() -> Rank | None:
    """The rank torchrun or accelerate set in the environment; None in a process of its own."""
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return None
    return Rank(int(os.environ.get("RANK") or 0), world, int(os.environ.get("LOCAL_RANK") or 0))


def spreads(processes: int) -> bool:
    """This run is spread: asked with --num-processes, or started by a launcher."""
    return processes > 1 or this_rank() is not None


def check_options(processes: int, output: str | None, server: str | None, text: str | None,
                  input_file: str | None) -> None:
    """Refuse what cannot be spread, before any input is read (``text``: the command's text argument).

    Raises:
        UsageError: no --output, --server, or --num-processes inside a launcher.
    """
    from gptcli import textio
    from gptcli.outputs import is_stream

    rank = this_rank()
    if not spreads(processes):
        return
    asked = f"--num-processes {processes}" if rank is None else f"a run in {rank.world} processes (WORLD_SIZE)"
    if rank is not None and processes > 1:
        raise UsageError(f"--num-processes {processes} inside a launcher that already started {rank.world} "
                         f"processes; drop --num-processes")
    if server:
        raise UsageError(f"{asked} does not apply with --server: the server batches the requests itself; "
                         f"drop one of them")
    if output is None or is_stream(Path(output).expanduser()):
        raise UsageError(f"{asked} writes its results through --output FILE (each process writes a part, "
                         f"then they are merged in input order); add --output results.jsonl")
    try:
        parts_folder(output).exists()
    except OSError:  # ENAMETOOLONG: the name leaves no room for the parts folder's suffix
        raise UsageError(f"--output {output}: the name leaves no room for the folder of parts beside it "
                         f"({PARTS_SUFFIX} added); give a shorter name") from None
    reads_stdin = input_file == "-" or (input_file is None and text in (None, "-"))
    if rank is not None and reads_stdin and not os.environ.get(textio.STDIN_FILE):
        raise UsageError(f"{asked} cannot share stdin between the processes; give the records with --input FILE")


def note_leftover_parts(output: str | None) -> None:
    """A one-process run whose --output has parts left by a stopped spread run: they are not used, say so."""
    if output is None or this_rank() is not None:
        return
    parts = parts_folder(output)
    if _is_folder(parts) and any(parts.glob(PART_GLOB)):
        from gptcli import console

        console.warn(f"{parts} holds results of a run in several processes that did not finish; this run does "
                     f"not use them: rerun with --num-processes to finish that run and merge them")


def run(job, items: list, load_options) -> None:
    """Run ``job`` on ``items`` spread over processes: launch them here, or be one of them."""
    from gptcli import launch

    rank = this_rank()
    if rank is None:
        _launch(job, items)
    elif launch.launched_process():
        launch.reported(lambda: _run_rank(job, items, load_options, rank))
    else:
        _run_rank(job, items, load_options, rank)


# ---------------------------------------------------------------- the first process


def _launch(job, items: list) -> None:
    """Check the --output as a one-process run would (exit 2 here, before any process starts), then
    start ``job.processes`` copies of this command line under torchrun."""
    import tempfile

    from gptcli import console, launch, textio

    run = job.run_record_of(items)
    with console.without_info(), job.open_final(run) as final:  # rank 0 says what it resumes
        done = _check_parts(job, run)
        if not _pending(job, items, final.is_done, done):
            console.info("nothing to do: every input already has a result in the --output file")
            return
    argv = launch.command_line()
    if argv is None:
        raise GptcliError("--num-processes needs gptcli's own command line: run it as `gptcli ...` or "
                          "`python -m gptcli ...`")
    with tempfile.TemporaryDirectory(prefix="gptcli-launch-") as folder:
        env = dict(os.environ)
        # The processes share the cores: torchrun would give each one thread.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // job.processes)))
        read = textio.stdin_bytes_read()
        if read is not None:  # already read here: hand the same bytes to each process
            spooled = Path(folder) / "stdin"
            spooled.write_bytes(read)
            env[textio.STDIN_FILE] = str(spooled)
        launch.run_torchrun(job.processes, without_num_processes(argv), env, Path(folder), "a worker process",
                            "the results already written are kept: rerun the same command to finish")


def without_num_processes(argv: list[str]) -> list[str]:
    """``argv`` less its --num-processes (before a ``--``, after which arguments are texts)."""
    kept, index = [], 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return kept + argv[index:]
        if arg == "--num-processes":
            index += 2
            continue
        if not arg.startswith("--num-processes="):
            kept.append(arg)
        index += 1
    return kept


# ---------------------------------------------------------------- each rank


def _run_rank(job, items: list, load_options, rank: Rank) -> None:
    """This rank's share of the records into its part; then, on rank 0, the parts into the --output."""
    import datetime

    import torch.distributed as dist

    # gloo for meeting only (the models never talk): it works beside NCCL and on CPUs; a long timeout,
    # since ranks wait at the end for the slowest.
    dist.init_process_group("gloo", rank=rank.index, world_size=rank.world, timeout=datetime.timedelta(days=7))
    try:
        parts = parts_folder(job.output)
        final = _prepare(job, items, parts) if rank.index == 0 else None
        shared = [final[1] if final else None]
        _together(lambda: dist.broadcast_object_list(shared, src=0))
        by_key = {json.dumps(item.id): item for item in items}
        share = [by_key[key] for key in shared[0][rank.index::rank.world]]
        if share:
            from gptcli import console

            with console.prefixed(f"process {rank.index + 1} of {rank.world}: "):
                job.part(str(parts / f"part-{rank.index}.jsonl")).run_here(share, _pinned(load_options, rank),
                                                                           items)
        _together(dist.barrier)
        if final is not None:
            with final[0] as sink:
                _merge(job, items, sink, parts)
    finally:
        dist.destroy_process_group()


class OtherProcessStopped(GptcliError):
    """This process waited for another that ended first: that one's report says why, not this."""

    said_by_another = True


def _together(collective) -> None:
    """A step all the processes take together; one that ended (an error, a signal) ends it for all."""
    try:
        collective()
    except RuntimeError:  # gloo: "Connection closed by peer"
        raise OtherProcessStopped("another process of this run stopped; the results already written are "
                                  "kept: rerun the same command to finish") from None


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long to have one beside it
        return False


def parts_folder(output: str) -> Path:
    path = Path(output).expanduser()
    return path.with_name(path.name + PARTS_SUFFIX)


def _prepare(job, items: list, parts: Path):
    """Rank 0: the --output's sink, held (locked) until the merge, and the keys of the items to do."""
    run = job.run_record_of(items)
    final = job.open_final(run)
    try:
        if job.overwrite:
            _remove_other_runs_parts(parts, job, run)
        done = _check_parts(job, run)
        parts.mkdir(exist_ok=True)
        return final, [json.dumps(item.id) for item in _pending(job, items, final.is_done, done)]
    except BaseException:
        final.close()
        raise


def _pending(job, items: list, final_done, part_done: set) -> list:
    return [item for item in items
            if not all(final_done(key) or key in part_done for key in job.keys_of(item))]


def _check_parts(job, run) -> set:
    """The keys the parts of an earlier, stopped run of this job hold (after checking them).

    Raises:
        UsageError: the parts' place is not a folder; a part was written by another run (other options or
            model), or holds a result whose input has changed since.
    """
    parts = parts_folder(job.output)
    if parts.exists() and not parts.is_dir():
        raise UsageError(f"--output {job.output}: {parts.name}, where the processes write their parts, is not "
                         f"a folder; move it aside or give another --output")
    if not parts.is_dir():
        return set()
    done = set()
    for path in sorted(parts.glob(PART_GLOB)):
        problem = _part_problem(path, job, run)
        if problem and job.overwrite:  # another run's: rank 0 removes it (_remove_other_runs_parts)
            continue
        if problem:
            raise UsageError(f"--output {job.output}: {parts.name}/ holds the unfinished parts of another run "
                             f"({problem}); rerun that run to finish it, or add --overwrite to start this one over")
        done.update(_key(record, job.key_fields) for record in _part_records(path))
    return done


def _part_problem(path: Path, job, run) -> str | None:
    """Why a part cannot be finished by ``run`` (None when it can): other settings, or changed inputs."""
    if path.stat().st_size == 0:  # a process stopped before its first result: nothing to check or keep
        return None
    from gptcli.outputs import read_run_record, run_record_path

    saved = read_run_record(run_record_path(path))
    if saved is None or saved["command"] != run.command or saved["settings"] != run.settings:
        return "other options, model or command"
    made_from = saved.get("inputs") or {}
    for record in _part_records(path):
        name = json.dumps(record.get("id") if job.key_fields[0] == "id" else record.get(job.key_fields[0]))
        if name not in run.inputs or made_from.get(name) != run.inputs[name]:
            return f"a result for id {json.loads(name)!r}, whose input has changed or is gone"
    return None


def _remove_other_runs_parts(parts: Path, job, run) -> None:
    """--overwrite: the parts of another run go; those of this very run, stopped part way, stay to finish
    (its --output is replaced when they are merged)."""
    for path in sorted(parts.glob(PART_GLOB)) if parts.is_dir() else ():
        if _part_problem(path, job, run):
            _remove_part(path)


def _part_records(path: Path) -> list[dict]:
    """A part's whole records (a torn last line, from a rank killed mid-write, is left out)."""
    lines = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def _key(record: dict, key_fields: tuple[str, ...]) -> tuple:
    return tuple(record.get(name) for name in key_fields)


def _merge(job, items: list, sink, parts: Path) -> None:
    """The parts' records into the --output, in input order, skipping what it already holds.

    Raises:
        GptcliError: a result is in no part (a part was removed while the ranks ran).
    """
    found = {}
    for path in sorted(parts.glob(PART_GLOB)):
        for record in _part_records(path):
            found.setdefault(_key(record, job.key_fields), record)
    missing = 0
    for item in items:
        for key in job.keys_of(item):
            if sink.is_done(key):
                continue
            if key not in found:
                missing += 1
                continue
            sink.emit(found[key], "")
    if missing:
        raise GptcliError(f"{missing} results are in none of the parts in {parts}; rerun the same command to "
                          f"make them")
    _remove_parts(parts)


def _remove_parts(parts: Path) -> None:
    """Remove the part files and their run records, and the folder if nothing else is in it."""
    if not parts.is_dir():
        return
    for path in parts.glob(PART_GLOB):
        _remove_part(path)
    try:
        parts.rmdir()
    except OSError:
        pass  # something gptcli did not write is in it: it stays


def _remove_part(path: Path) -> None:
    from gptcli.outputs import run_record_path

    run_record_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _pinned(load_options, rank: Rank):
    """On GPUs, each process of this machine on a GPU of its own (the --device auto or cuda of one process
    would spread one model over all of them)."""
    import torch

    if load_options.device in ("auto", "cuda") and torch.cuda.is_available():
        return replace(load_options, device=f"cuda:{rank.local % torch.cuda.device_count()}")
    return load_options
