"""Positions for prompts with images on models that give image tokens 3-D rotary positions
(Qwen2-VL, Qwen2.5-VL and their kin: "M-RoPE").

Such a model places an image's tokens by (time, row, column) and the text after it from the
largest of those on, so a prompt's next position is not its length: it is its length plus a
per-prompt offset (``get_rope_index``'s "rope delta", negative for images). The engine asks
the model for the prefill's 3-D positions and keeps each row's offset in its own position, so
every later token gets the model's text position (the three axes equal), which the model
expands itself from the 1-D positions the engine passes while decoding. Nothing is kept on the
model: transformers' own generate stores the offset there, for one batch at a time.
"""

from __future__ import annotations

import inspect

# The processor's outputs the model's get_rope_index reads besides the ids and the mask.
_ROPE_INPUTS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")


def rope_index(model):
    """The model's ``get_rope_index`` (bound), or None for models with ordinary positions."""
    for owner in (getattr(model, "model", None), model):
        function = getattr(owner, "get_rope_index", None)
        if callable(function):
            return function
    return None


def image_positions(model, ids, attention, extra: dict):
    """The prefill's position ids and each row's offset (added to its 1-D positions from then on).

    Returns ``None`` when the model has ordinary positions: the caller's 1-D positions are right.
    """
    function = rope_index(model)
    if function is None:
        return None
    accepted = inspect.signature(function).parameters
    kwargs = {name: extra[name] for name in _ROPE_INPUTS if name in extra and name in accepted}
    positions, deltas = function(ids, attention_mask=attention, **kwargs)
    return positions, [int(d) for d in deltas.reshape(-1).tolist()]
