"""Key/value caches of a frozen LLM: copies by batch row, and a memo of prompt prefixes.

A prompt's first piece (everything before the first ECG: the system text and, in the
``question_first`` layout, the question) does not depend on the projector, so its
key/values can be computed once and reused: across the inner steps of one episode
(:meth:`EcgQaModel.prefix_cache`), and with a :class:`PrefixMemo`, across the episodes and
methods of a benchmark, where a few dozen questions recur in thousands of prompts.

Reusing them changes no result where the same operations run: a prefix computed alone and
then copied into several batch rows holds the same numbers as one computed in a batch
(every kernel here works row by row), and a prompt run as prefix + rest gives the hidden
states of the whole prompt run at once (positions are passed explicitly). Both are checked
bit for bit on the embedded Gemma (bf16) by ``tests/models/test_fusion.py`` on tiny models
and by ``eval/bench_speed.py`` on the real one.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch


def supports_row_copies(cache) -> bool:
    """Whether ``cache`` is a transformers Cache of per-layer key/value tensors (``layers``
    with ``keys`` / ``values``), the kind :func:`select_rows` and :func:`stack_rows` copy."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(hasattr(layer, "keys") and hasattr(layer, "values")
                                for layer in layers)


def select_rows(cache, rows: torch.Tensor):
    """A new cache whose batch row ``i`` is row ``rows[i]`` of ``cache`` (``cache`` is left
    as it was: a forward pass on the copy rebinds the copy's tensors only)."""
    def take(_, layer):
        idx = rows.to(layer.keys.device)
        return layer.keys[idx], layer.values[idx]

    return _new_layers(cache, take)


def stack_rows(caches: Sequence, rows: Sequence[int]):
    """A new cache whose batch row ``i`` is the (single) row of ``caches[rows[i]]``; the
    caches must hold the same number of positions."""
    return _new_layers(caches[0], lambda j, _: (
        torch.cat([caches[r].layers[j].keys for r in rows]),
        torch.cat([caches[r].layers[j].values for r in rows])))


def _new_layers(cache, take):
    """A shallow copy of ``cache`` whose filled layers ``j`` hold ``take(j, layer)`` as
    their (keys, values); empty layers are copied as they are."""
    new = copy.copy(cache)
    new.layers = []
    for j, layer in enumerate(cache.layers):
        twin = copy.copy(layer)
        if getattr(layer, "is_initialized", True) and layer.keys is not None \
                and layer.keys.numel():
            twin.keys, twin.values = take(j, layer)
        new.layers.append(twin)
    return new


class PrefixMemo:
    """Key/values of single prompt prefixes by token ids, least recently used dropped.

    Valid for one frozen LLM (the memo holds no projector output). Entries are never
    changed in place: users get copies (:func:`stack_rows`).

    Args:
        max_items: prefixes kept (each is ``layers x 2 x kv_heads x length x head_dim``
            numbers: about 0.8 MB for a 42-token prefix of Gemma 3 270M in bf16).
    """

    def __init__(self, max_items: int = 512):
        self.max_items = max_items
        self._items: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, ids: tuple[int, ...]):
        item = self._items.get(ids)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(ids)
        return item

    def put(self, ids: tuple[int, ...], cache) -> None:
        self._items[ids] = cache
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
