"""One input's result as summarize, translate and classify write it, whichever front door ran it.

A task's service turns items into ``ItemResult``s; the command writes them (a record, a line
of stdout, warnings on stderr) after a local run and after a run on `gptcli serve` alike, so
both write the same. On the wire it is ``to_dict()``'s plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ItemResult:
    """``fields``: what the input's record gets after its own fields; ``warnings`` and ``logs``
    (--verbose): what stderr says about it, logs first; ``marks``: facts about it that are not
    written but summed up after the last result (translate: a line in the wrong language)."""

    fields: dict
    warnings: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    marks: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"fields": self.fields, "warnings": self.warnings, "logs": self.logs, "marks": self.marks}

    @classmethod
    def from_dict(cls, data: dict) -> "ItemResult":
        return cls(dict(data["fields"]), list(data.get("warnings", ())), list(data.get("logs", ())),
                   dict(data.get("marks", {})))
