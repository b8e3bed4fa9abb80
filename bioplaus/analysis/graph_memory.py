"""How much memory does a training step's autograd graph keep? Saved-tensor bytes, live and peak.

Activation memory is what separates full BPTT, truncated BPTT, sparse attentive backtracking
and its streaming backward. [`SavedTensorMeter`][bioplaus.analysis.graph_memory.SavedTensorMeter] counts the bytes of
every tensor autograd saves for backward while it is active, once per storage (views and tensors saved by several
nodes count once), from the moment it is saved until the graph node holding it is freed. It
measures the graph itself, independent of the allocator, so it works the same on CPU and GPU.
Tensors come back from the meter detached, so graphs recorded under it support one backward,
not double backward.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import torch


class _Held:
    """A saved tensor, reporting its release to the meter when autograd drops it."""

    __slots__ = ("tensor", "key", "meter")

    def __init__(self, tensor: torch.Tensor, key: int, meter: SavedTensorMeter):
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager counting the bytes autograd saves for backward (live now, and the peak).

    >>> with SavedTensorMeter(exclude=model.parameters()) as meter:   # doctest: +SKIP
    ...     loss = task_loss(model(x)); loss.backward()
    >>> meter.peak                                                   # doctest: +SKIP

    Args:
        exclude: tensors not to count (typically the parameters, saved by every layer).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._holders: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.live = 0
        """Bytes saved by graph nodes that are still alive."""
        self.peak = 0
        """The largest value [`live`][bioplaus.analysis.graph_memory.SavedTensorMeter.live] reached."""
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor | _Held:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._excluded:
            return tensor
        count = self._holders.get(key, 0)
        if count == 0:
            self._sizes[key] = storage.nbytes()
            self.live += self._sizes[key]
            self.peak = max(self.peak, self.live)
        self._holders[key] = count + 1
        # hold a detached alias: the tensor itself may be the output of the node saving it, and
        # holding it (with its grad_fn) would make a reference cycle that keeps the graph alive
        return _Held(tensor.detach(), key, self)

    @staticmethod
    def _unpack(packed: torch.Tensor | _Held) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Held) else packed

    def _release(self, key: int) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.live -= self._sizes.pop(key)

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._hooks.__exit__(kind, error, trace)
