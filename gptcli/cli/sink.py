"""Where a command's results go: text on stdout, JSON lines on stdout, or an --output file.

Shared by every command so that each writes, flushes and resumes the same way.
"""

from __future__ import annotations

from typing import Any

from gptcli import console, textio


class ResultSink:
    """Writes one result at a time, in the order given, flushed at once.

    With an --output file (see ``gptcli.outputs``: owned, locked, checked against
    ``run``, the RunRecord of this run), results whose key is already in it (from an
    earlier, interrupted run of the same command) are skipped: ``is_done`` tells the caller which inputs to
    leave out, and ``emit`` never writes a key twice.
    """

    def __init__(self, output: str | None, json_output: bool, run=None, key_fields: tuple[str, ...] = ("id",),
                 overwrite: bool = False):
        from gptcli.outputs import open_result_file

        self.json_output = json_output
        self.key_fields = key_fields
        self.file = open_result_file(output, key_fields, run, overwrite) if output else None
        if self.file is not None and self.file.dropped_torn_line:
            console.warn(f"{output}: dropped a torn last line left by an interrupted run")
        if self.file is not None and self.file.done and not _is_part(output):
            console.info(f"resuming: {len(self.file.done)} results already in {output}")

    def is_done(self, key: tuple) -> bool:
        return self.file is not None and key in self.file.done

    def emit(self, record: dict[str, Any], text: str) -> None:
        """Write ``record`` (to the file, or as JSON) or else ``text`` as one line of stdout."""
        if self.file is not None:
            key = tuple(record.get(name) for name in self.key_fields)
            if key not in self.file.done:
                self.file.write(record)
                self.file.done.add(key)
        elif self.json_output:
            textio.write_json_line(record)
        else:
            textio.write_stdout(text + "\n")

    def stream(self, text: str) -> None:
        """Text of a result still being made (single prompt streaming)."""
        textio.write_stdout(text)

    @property
    def writes_stdout(self) -> bool:
        return self.file is None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> "ResultSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_part(output: str) -> bool:
    """A part of a spread run (cli.spread): the run as a whole says what it resumes."""
    from pathlib import Path

    from gptcli.cli.spread import PARTS_SUFFIX

    return Path(output).parent.name.endswith(PARTS_SUFFIX)


class ArraySink:
    """`gptcli embed --format npy`: the vectors collected in input order, saved as one NumPy array
    (float32, a row per input) when the run ends; a run that stops early writes nothing.

    ``is_done`` is all or nothing: the --output already holds this run's array, or nothing is done.
    """

    json_output = False
    writes_stdout = False

    def __init__(self, output: str, run, overwrite: bool = False):
        from gptcli.outputs import open_whole_file

        self.output = output
        self.file = open_whole_file(output, run, overwrite)
        self.rows: list = []
        self.expected = len(run.inputs)

    def is_done(self, key: tuple) -> bool:
        return self.file.done

    def emit(self, record: dict[str, Any], text: str) -> None:
        import numpy

        # float32 as it comes: Python floats would take 6x the memory of the array itself.
        self.rows.append(numpy.asarray(record["embedding"], dtype=numpy.float32))

    def close(self) -> None:
        if self.file.done or len(self.rows) != self.expected:
            return
        import numpy

        from gptcli.outputs import write_whole_file

        array = numpy.stack(self.rows)
        write_whole_file(self.file, lambda handle: numpy.save(handle, array, allow_pickle=False))
        console.log(f"wrote {array.shape[0]} vectors of {array.shape[1]} to {self.output}")

    def __enter__(self) -> "ArraySink":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:  # an error or Ctrl-C part way: no array, and the old file stays
            self.close()
