"""A KV cache whose rows can be filled, emptied and refilled while a batch runs.

Every row writes its next token at the same column (``length``); where a row's own
tokens are is told by an attention mask, not by their place. So a request joins a
running batch by copying its prompt's keys and values into a free row at any columns
(masked elsewhere), and leaves by being masked out — no other row is moved. Positions
are passed per row, and rotary embeddings are applied before keys are cached, so a
row attends exactly as it would alone.

Columns only grow; when they run out the live ones of every row are packed to the
right (``compact``), an occasional copy instead of one per admission.
"""

from __future__ import annotations

from transformers.cache_utils import Cache, DynamicCache

from gptcli.engine.kvcache import ReservedLayer


class SlotLayer(ReservedLayer):
    """One layer's keys and values: rows x heads x capacity x width, filled up to ``length``."""

    def allocate(self, like_keys, like_values, rows: int, capacity: int) -> None:
        # Zeros, not empty memory: a masked column still meets a zero attention weight, and
        # 0 x NaN from uninitialised memory would be NaN.
        self.dtype, self.device = like_keys.dtype, like_keys.device
        self._keys = like_keys.new_zeros((rows, like_keys.shape[1], capacity, like_keys.shape[-1]))
        self._values = like_values.new_zeros((rows, like_values.shape[1], capacity, like_values.shape[-1]))
        self.capacity, self.is_initialized = capacity, True
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]


class SlotCache(DynamicCache):
    """The batch's cache: SlotLayers that move together."""

    def __init__(self, num_layers: int):
        Cache.__init__(self, layers=[SlotLayer(0) for _ in range(num_layers)])
        self.rows = 0
        self.capacity = 0

    @property
    def length(self) -> int:
        return self.layers[0].length

    def set_length(self, length: int) -> None:
        for layer in self.layers:
            layer.length = length
            layer._views()

    def resize(self, rows: int, capacity: int, like) -> None:
        """Room for ``rows`` rows of ``capacity`` columns, keeping what is there (``like``: a
        prefill cache whose layers give dtype, heads and width)."""
        for layer, source in zip(self.layers, like.layers):
            old_keys, old_values = layer._keys, layer._values
            layer.allocate(source.keys, source.values, rows, capacity)
            if old_keys is not None:
                kept_rows, kept_cols = min(rows, old_keys.shape[0]), min(capacity, old_keys.shape[2])
                layer._keys[:kept_rows, :, :kept_cols] = old_keys[:kept_rows, :, :kept_cols]
                layer._values[:kept_rows, :, :kept_cols] = old_values[:kept_rows, :, :kept_cols]
            layer._views()
        self.rows, self.capacity = rows, capacity

    def place(self, slots: list[int], prefill, rows: list[int], start: int) -> None:
        """Copy rows ``rows`` of a prefill cache into ``slots`` (in pairs), at columns ``start``.."""
        import torch

        device = self.layers[0]._keys.device
        target, source_rows = (torch.tensor(x, dtype=torch.long, device=device) for x in (slots, rows))
        for layer, source in zip(self.layers, prefill.layers):
            width = source.keys.shape[-2]
            layer._keys[target, :, start:start + width] = source.keys.index_select(0, source_rows)
            layer._values[target, :, start:start + width] = source.values.index_select(0, source_rows)

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only these rows, in this order (a batch whose queue ran dry shrinks)."""
        import torch

        index = torch.tensor(rows, dtype=torch.long, device=self.layers[0]._keys.device)
        for layer in self.layers:
            layer._keys, layer._values = layer._keys[index], layer._values[index]
            layer._views()
        self.rows = len(rows)

    def gather_columns(self, columns, capacity: int) -> None:
        """Rebuild every row from the columns ``columns[row]`` (rows x width), into ``capacity``
        columns, and set the length to that width."""
        width = columns.shape[1]
        for layer in self.layers:
            for name in ("_keys", "_values"):
                buffer = getattr(layer, name)
                index = columns[:, None, :, None].expand(buffer.shape[0], buffer.shape[1], width, buffer.shape[3])
                packed = buffer.new_zeros((buffer.shape[0], buffer.shape[1], capacity, buffer.shape[3]))
                packed[:, :, :width] = buffer.gather(2, index)
                setattr(layer, name, packed)
            layer.capacity = capacity
        self.capacity = capacity
        self.set_length(width)
