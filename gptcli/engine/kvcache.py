"""A KV cache that reserves room for the whole batch up front.

transformers' DynamicCache grows by ``torch.cat`` at every step, copying every
layer's keys and values each time: on 2 CPU cores that copying took 13% of a
32-row batch's time (benchmarks/README.md). The decode loop knows how long a
batch can get (prompt + max new tokens), so each layer here writes into a
buffer of that length and hands attention a view of the filled part.

Used only for models whose layers all attend to the full context (no sliding
windows, no linear attention), where a plain growing cache is what
transformers would use itself.
"""

from __future__ import annotations

import inspect

from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

FULL_ATTENTION = "full_attention"


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of ``capacity`` positions."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._keys = self._values = None

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        rows, heads, steps, width = key_states.shape
        room = max(self.capacity, steps)
        self._keys = key_states.new_empty((rows, heads, room, width))
        self._values = value_states.new_empty((rows, value_states.shape[1], room, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # more than reserved (should not happen): grow like DynamicLayer
            self._keys = self._grown(self._keys, end)
            self._values = self._grown(self._values, end)
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    @staticmethod
    def _grown(buffer, needed: int):
        import torch

        extra = buffer.new_empty((*buffer.shape[:2], needed - buffer.shape[-2], buffer.shape[-1]))
        return torch.cat([buffer, extra], dim=-2)

    def get_seq_length(self) -> int:
        return self.length

    def reset(self) -> None:
        self.length = 0
        super().reset()


class ReservedCache(DynamicCache):
    """A DynamicCache whose layers are ReservedLayers."""

    def __init__(self, num_layers: int, capacity: int):
        Cache.__init__(self, layers=[ReservedLayer(capacity) for _ in range(num_layers)])


def reserved_cache_for(model, capacity: int) -> ReservedCache | None:
    """A cache with room for ``capacity`` positions, or None where the model needs another kind."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layers = getattr(config, "num_hidden_layers", None)
    kinds = getattr(config, "layer_types", None) or [FULL_ATTENTION]
    if not isinstance(layers, int) or any(kind != FULL_ATTENTION for kind in kinds):
        return None
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return None
    if not getattr(model, "_supports_cache_class", True):
        return None
    return ReservedCache(layers, capacity)


def cache_argument(model) -> str:
    """The name under which ``model.forward`` takes its KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name
    warns, and goes in 5.40); older releases, and remote-code models written
    for them, know only ``past_key_values``. Asked once per model.
    """
    name = getattr(model, "_gptcli_cache_argument", None)
    if name is None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper
        name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        model._gptcli_cache_argument = name
    return name


def returned_cache(output):
    """The KV cache a forward pass returned, under either name (see ``cache_argument``)."""
    cache = getattr(output, "cache", None)  # reading ``past_key_values`` on 5.24 warns
    return cache if cache is not None else getattr(output, "past_key_values", None)
