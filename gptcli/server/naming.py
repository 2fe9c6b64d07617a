"""The names a served model answers to: the ``model`` field of requests and /v1/models.

A model given as a folder or file is named by its last path part (a client should not need
to know the server's paths, nor learn them from /v1/models); an alias also answers to its
hub id; a hub id also to its short name (``SmolLM2-135M-Instruct``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptcli.server.errors import ApiError


@dataclass(frozen=True)
class ServedName:
    id: str
    aliases: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    def accepts(self, name: str) -> bool:
        return name.strip().lower() in {known.lower() for known in self.all}


def served_name(source) -> ServedName:
    """The id and aliases of a model resolved to ``source`` (a ``models.resolve.ModelSource``)."""
    from gptcli.models.resolve import ALIASES

    spec = source.spec
    if spec.lower() in ALIASES:
        hub_id = ALIASES[spec.lower()]
        return ServedName(spec.lower(), _unique([hub_id, hub_id.rsplit("/", 1)[-1]], spec.lower()))
    if source.hub_id is not None and source.folder is None and source.gguf is None:
        return ServedName(spec, _unique([spec.rsplit("/", 1)[-1]], spec))
    path = Path(spec).expanduser()
    name = path.stem if path.suffix.lower() == ".gguf" else path.name
    return ServedName(name or spec)


def _unique(names: list[str], primary: str) -> tuple[str, ...]:
    seen = {primary.lower()}
    kept = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    return tuple(kept)


def check_model(requested: str, *served: ServedName) -> ServedName:
    """The served model a request names.

    Raises:
        ApiError: 404 naming the models this server has.
    """
    for name in served:
        if name.accepts(requested):
            return name
    offered = ", ".join(repr(name.id) for name in served)
    raise ApiError(404, f"the model {requested!r} is not served here; this server has {offered} "
                        f"(GET /v1/models lists them)", "model", "model_not_found")


def model_list(created: int, *served: ServedName) -> dict:
    """The /v1/models answer: every name each model answers to, its id first."""
    data = [{"id": name, "object": "model", "created": created, "owned_by": "gptcli"}
            for served_model in served for name in served_model.all]
    return {"object": "list", "data": data}
