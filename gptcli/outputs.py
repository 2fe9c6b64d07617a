"""--output files: whose they are, which run made them, one writer at a time, whole records.

The reading side of user data is ``textio``; this is its writing side for --output.

- Ownership: gptcli writes its results only into a file that is new, empty, or one it
  wrote itself. It knows its own by the run record beside it (``NAME.gptcli.json``).
  Anything else is refused and left byte for byte as it was, ``--overwrite`` or not.
- Identity: the run record holds what produced the results (command, model, the
  options that change outputs, a digest of each input). A rerun continues only the
  same run; otherwise it is refused, naming what changed.
- One writer: the results file is locked (flock) while a run writes it.
- Whole records: each record is appended in one go and cut back if the write fails
  or is interrupted; a torn last line is dropped only when it is a gptcli record.
- FIFOs, /dev/stdout and other non-regular files are write-only streams: no resume.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptcli.errors import GptcliError, InputError, UsageError

RUN_RECORD_SUFFIX = ".gptcli.json"
RECORD_START = b'{"id": '  # every result record gptcli writes starts so (the id comes first)
FORMAT = 1


@dataclass
class RunRecord:
    """What produced the results of an --output file.

    ``settings``: the model and every option that changes the results, by option name.
    ``inputs``: the digest of each input, keyed by its id in JSON (1 and "1" differ).
    """

    command: str
    settings: dict
    inputs: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"gptcli_run": FORMAT, "command": self.command, "pid": os.getpid(),
                "settings": self.settings, "inputs": self.inputs}


def input_digest(fields: dict) -> str:
    """A digest of one input's fields (its text and what is carried into its result)."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def input_key(item_id: Any) -> str:
    return json.dumps(item_id)


def run_record_path(output: Path) -> Path:
    return output.with_name(output.name + RUN_RECORD_SUFFIX)


# ---------------------------------------------------------------- checks before any model loads


def check_output_path(output: str, inputs: list[str | None]) -> None:
    """Refuse an --output in a missing folder, that is a folder, or that is one of the run's inputs."""
    out = Path(output).expanduser()
    if out.name.endswith(RUN_RECORD_SUFFIX):
        raise UsageError(f"--output {output} is a gptcli run record, not a results file; "
                         f"give the results file's name")
    if not output:
        raise UsageError("--output is empty; give a file name such as out.jsonl")
    if output == "-":  # a shell user's "stdout", not a file named "-" to resume from
        raise UsageError("--output - would write a file named '-'; for JSON lines on stdout use --json, "
                         "or give a file name such as out.jsonl")
    if is_stream(out):
        return
    _check_name_length(out, output)
    if not out.parent.exists():
        raise UsageError(f"--output {output}: the folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as {output.rstrip('/')}/out.jsonl")
    record = run_record_path(out)
    if record.exists() and not record.is_file():
        raise UsageError(f"--output {output}: {record}, where gptcli keeps the run record, is not a file; "
                         f"move it aside or give another --output")
    if not out.exists():
        return
    for given in inputs:
        if given and given != "-" and Path(given).expanduser().exists() \
                and os.path.samefile(out, Path(given).expanduser()):
            raise UsageError(f"--output {output} is the input file {given} of this run; "
                             f"write the results to another file")


def _check_name_length(out: Path, output: str) -> None:
    """Room for the results file's name and its run record's, and a path the system can open."""
    try:
        limit = os.pathconf(out.parent if out.parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(os.fsencode(out.name))
    if size + len(RUN_RECORD_SUFFIX) > limit:
        raise UsageError(f"--output {_short(output)}: the file name is {size} bytes; with its run record beside "
                         f"it ({RUN_RECORD_SUFFIX} added) it may have at most {limit - len(RUN_RECORD_SUFFIX)}: "
                         f"give a shorter name")
    try:
        out.exists()
    except OSError as exc:  # a path longer than the system takes (ENAMETOOLONG)
        raise UsageError(f"--output {_short(output)}: {exc.strerror}; give a shorter path") from None


def _short(output: str) -> str:
    return output if len(output) <= 60 else output[:60] + "..."


def is_stream(path: Path) -> bool:
    """A FIFO, a terminal, /dev/stdout ...: written as a stream, never scanned for resuming."""
    if str(path).startswith(("/dev/", "/proc/")):
        return True
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


# ---------------------------------------------------------------- the results file


@dataclass
class ResultFile:
    """An --output file, open for appending after the records already done, locked."""

    path: Path
    handle: Any
    done: set = field(default_factory=set)
    dropped_torn_line: bool = False
    resumable: bool = True
    replacing: RunRecord | None = None  # --overwrite: the run whose first record replaces the old results

    def write(self, obj: dict) -> None:
        """Append one record whole; on failure or interruption cut the file back to whole records."""
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        if self.replacing is not None:
            self._replace_old_results()
        good = self.handle.tell() if self.resumable else None
        try:
            view = memoryview(data)
            while view:  # an unbuffered write may take only part of the bytes
                view = view[self.handle.write(view):]
        except OSError as exc:
            self._cut_back(good)
            raise GptcliError(f"cannot write to {self.path}: {exc.strerror}; the records before "
                              f"this one are saved, rerun to continue") from None
        except BaseException:  # Ctrl-C, SIGTERM mid-record: keep only whole records
            self._cut_back(good)
            raise

    def _replace_old_results(self) -> None:
        """--overwrite empties the file only now that a new result exists: a run that fails to load
        its model, or is stopped before its first result, leaves the old results and their run record."""
        self.handle.truncate(0)
        self.handle.seek(0, os.SEEK_END)
        _write_run_record(run_record_path(self.path), self.replacing)
        self.replacing = None

    def _cut_back(self, size: int | None) -> None:
        if size is None:
            return
        try:
            self.handle.truncate(size)
        except OSError:
            pass  # a torn last line is still dropped by the next run

    def close(self) -> None:
        self.handle.close()


def open_result_file(output: str, key_fields: tuple[str, ...], run: RunRecord,
                     overwrite: bool = False) -> ResultFile:
    """Open --output for this run: new, or resuming (or, with ``overwrite``, replacing) its own results.

    Raises:
        UsageError: the file is not gptcli's, holds another run's results, or another
            process is writing it.
    """
    path = Path(output).expanduser()
    if is_stream(path):
        return ResultFile(path, _open(path, output, os.O_WRONLY | os.O_APPEND), resumable=False)
    record_path = run_record_path(path)
    saved = _check_owner(path, output, record_path)
    handle = _open_locked(path, output, record_path)
    try:
        saved = read_run_record(record_path) or saved  # as the last writer left it, now that we hold the lock
        result = ResultFile(path, handle)
        if overwrite and path.stat().st_size:
            result.replacing = run
            return result
        if path.stat().st_size:
            _check_same_run(saved, run, output)
            _resume(result, key_fields, run, saved, output)
        _write_run_record(record_path, run)
        return result
    except BaseException:
        handle.close()
        raise


def _check_owner(path: Path, output: str, record_path: Path) -> dict | None:
    """The saved run record; refuses a non-empty file that has none (gptcli did not write it)."""
    saved = read_run_record(record_path)
    if not path.exists() or saved is not None or path.stat().st_size == 0:
        return saved
    if record_path.exists():
        raise UsageError(f"--output {output}: its run record {record_path.name} is damaged (edited?), so gptcli "
                         f"cannot tell which run wrote it; both were left as they are: give a new --output "
                         f"file, or move these aside")
    raise UsageError(f"--output {output} exists and was not written by gptcli (there is no "
                     f"{record_path.name} beside it); it was left as it is: give a new --output "
                     f"file, or move this one aside")


def read_run_record(record_path: Path) -> dict | None:
    """The run record at ``record_path``; None when there is none, or it is damaged (edited)."""
    try:
        saved = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("gptcli_run") != FORMAT:
        return None
    shapes = (("command", str), ("settings", dict), ("inputs", dict))
    return saved if all(isinstance(saved.get(name), kind) for name, kind in shapes) else None  # else: edited


def _open(path: Path, output: str, flags: int):
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot open for writing ({exc.strerror})") from None
    # Unbuffered: each record reaches the file whole when write returns, and nothing is
    # left in a buffer to fail again (or be lost) at close.
    return os.fdopen(fd, "ab", buffering=0)


def _open_locked(path: Path, output: str, record_path: Path):
    handle = _open(path, output, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise UsageError(f"--output {output}: cannot lock ({exc.strerror})") from None
        holder = (read_run_record(record_path) or {}).get("pid")
        who = f"another gptcli process (pid {holder})" if holder else "another gptcli process"
        raise UsageError(f"--output {output} is being written by {who}; wait for it to finish, "
                         f"or give another --output") from None
    return handle


def _check_same_run(saved: dict | None, run: RunRecord, output: str) -> None:
    fix = "give a new --output, or add --overwrite to replace its results"
    if saved is None:
        return  # an empty file adopted: nothing to compare
    if saved.get("command") != run.command:
        raise UsageError(f"--output {output} holds results of `gptcli {saved.get('command')}`, not "
                         f"`gptcli {run.command}`; {fix}")
    before = saved.get("settings") or {}
    for name in sorted(set(before) | set(run.settings)):
        if before.get(name) != run.settings.get(name):
            raise UsageError(f"--output {output} holds results of another run: {name} was "
                             f"{_shown(before.get(name))}, now {_shown(run.settings.get(name))}; {fix}")


def _shown(value: Any) -> str:
    return "not given" if value is None else json.dumps(value, ensure_ascii=False)


def _resume(result: ResultFile, key_fields: tuple[str, ...], run: RunRecord, saved: dict | None,
            output: str) -> None:
    done, good_length, torn = _scan(result.path, key_fields, output)
    made_from = (saved or {}).get("inputs") or {}
    for key in done:  # in file order: the first record that no longer fits is the one named
        name = input_key(key[0])
        if name not in run.inputs or (saved is not None and made_from.get(name) != run.inputs[name]):
            where = "is no longer in the input" if name not in run.inputs else "has changed since"
            raise UsageError(f"--output {output} holds a result for id {key[0]!r}, whose input {where}; "
                             f"give a new --output, or add --overwrite to replace its results")
    if torn:
        result.handle.truncate(good_length)
    result.done, result.dropped_torn_line = set(done), torn


def _scan(path: Path, key_fields: tuple[str, ...], output: str) -> tuple[dict, int, bool]:
    """The keys of the whole records (in file order), the length they take, and whether a torn record follows."""
    done: dict = {}
    good = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                if raw.startswith(RECORD_START):
                    return done, good, True  # the writer died before the newline
                raise _not_a_record(output, number)
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _not_a_record(output, number) from None
            if not isinstance(obj, dict) or "id" not in obj:
                raise _not_a_record(output, number)
            done[tuple(obj.get(name) for name in key_fields)] = None
            good += len(raw)
    return done, good, False


# ---------------------------------------------------------------- whole files (a NumPy array)


@dataclass
class WholeFile:
    """An --output written once, whole, when its run ends (`gptcli embed --format npy`).

    The same ownership and identity rules as a results file, but nothing to resume: an array
    has no records to append to. ``done``: it already holds this very run's results.
    """

    path: Path
    run: RunRecord
    done: bool = False


def open_whole_file(output: str, run: RunRecord, overwrite: bool = False) -> WholeFile:
    """Check --output for a run that writes it whole at the end.

    Raises:
        UsageError: the file is not gptcli's, holds another run's results (unless ``overwrite``),
            or is a stream.
    """
    path = Path(output).expanduser()
    if is_stream(path):
        raise UsageError(f"--output {output} is not a regular file; an array is written whole at the end: "
                         f"give a file name")
    saved = _check_owner(path, output, run_record_path(path))
    if saved is None or not path.exists() or path.stat().st_size == 0 or overwrite:
        return WholeFile(path, run)
    _check_same_run(saved, run, output)
    if saved.get("inputs") != run.inputs:
        raise UsageError(f"--output {output} holds the results of other inputs (an array is written whole, "
                         f"so changed or added inputs make another run); give a new --output, or add "
                         f"--overwrite to replace it")
    return WholeFile(path, run, done=True)


def write_whole_file(file: WholeFile, write) -> None:
    """``write(handle)`` into a temporary file beside it, then rename it over the --output and record the run.

    A run stopped before the end leaves the old file (or none), never half an array.
    """
    temp = file.path.with_name(f".gptcli-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, file.path)
    except OSError as exc:
        raise GptcliError(f"cannot write {file.path}: {exc.strerror}; free some space or make the folder "
                          f"writable, then rerun") from None
    finally:
        temp.unlink(missing_ok=True)
    # After the rename: a crash between the two leaves a file the old record does not match, which a
    # rerun refuses, rather than a record that vouches for a file that was never written.
    _write_run_record(run_record_path(file.path), file.run)


def read_results(path: str) -> list[tuple[str, dict]]:
    """("file:line", record) for each record of a results file in the form gptcli writes them (JSON
    lines, each an object with an id), whatever the file's name: an --output file of an earlier run.

    Raises:
        InputError: the file cannot be read, or naming the first line that is not such a record.
    """
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {'no such file' if not file.exists() else f'cannot read ({exc.strerror})'}") from None
    records = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict) or "id" not in obj:
            raise InputError(f"{path}:{number}: not a result record (a JSON object with an id, one per line, "
                             f"as `--output` writes them)")
        records.append((f"{path}:{number}", obj))
    return records


def _not_a_record(output: str, number: int) -> InputError:
    return InputError(f"--output {output}:{number}: not a gptcli result record (was the file edited?); "
                      f"it was left as it is: give a new --output, or add --overwrite to replace its results")


def _write_run_record(record_path: Path, run: RunRecord) -> None:
    """Replace the run record atomically: a crash leaves the old one or the new one, whole."""
    temp = None
    try:
        # A short name of its own: the record's name plus a suffix could pass the name limit.
        temp = record_path.with_name(f".gptcli-run-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        temp.write_text(json.dumps(run.to_json()), encoding="utf-8")
        os.replace(temp, record_path)
    except OSError as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        raise GptcliError(f"cannot write {record_path}: {exc.strerror}; free some space or make "
                          f"the folder writable, then rerun") from None


# ---------------------------------------------------------------- whole files a command saves (chat's /save)


def save_whole(target: str, text: str, run: RunRecord) -> None:
    """Write ``text`` as the whole of ``target``, atomically, with its run record beside it: into a new
    or empty file, or one ``run.command`` saved before (its run record says so), never another.

    Raises:
        UsageError: the file exists and ``run.command`` did not write it (it is left as it was).
        GptcliError: it cannot be written.
    """
    path = Path(target).expanduser()
    record_path = run_record_path(path)
    saved = read_run_record(record_path)
    ours = saved is not None and saved.get("command") == run.command
    if path.is_dir():
        raise UsageError(f"{target} is a folder; give a file name")
    if path.exists() and path.stat().st_size and not ours:
        whose = (f"holds results of `gptcli {saved['command']}`" if saved else
                 f"was not written by `gptcli {run.command}` (there is no {record_path.name} beside it)")
        raise UsageError(f"{target} {whose}; it was left as it is: give a new file name, or move it aside")
    write_whole_file(WholeFile(path, run), lambda handle: handle.write(text.encode("utf-8")))
