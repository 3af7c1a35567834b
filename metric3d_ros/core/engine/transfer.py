"""Device-to-host transfer of the engine's outputs: one copy per output kind.

All groups' tensors of one kind (e.g. every frame's depth) are flattened into one device buffer and copied
with ONE non-blocking copy into pinned host memory; ``finish`` waits for those copies (an event recorded after
them on the stream that enqueued them) and splits the host buffer into per-group numpy views. The pinned
blocks come from PyTorch's caching host allocator and stay owned by the returned arrays (a numpy view keeps
its tensor alive), so results never alias the next batch's buffers. On the CPU nothing is copied: the numpy
arrays are views of the result tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class PendingDownload:
    """Copies in flight; ``finish()`` returns ``{kind: [array per part]}`` in the order parts were added."""

    device: torch.device
    parts: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _host: dict[str, torch.Tensor] = field(default_factory=dict)
    _started: bool = False
    _done: torch.cuda.Event | None = None  # recorded after the copies, on the stream that enqueued them

    def add(self, kind: str, tensor: torch.Tensor) -> int:
        """Queue ``tensor`` under ``kind``; returns its index within the kind."""
        if self._started:
            raise RuntimeError('PendingDownload.add() after start()')
        items = self.parts.setdefault(kind, [])
        items.append(tensor)
        return len(items) - 1

    def start(self) -> None:
        """Enqueue one device-to-host copy per kind (no-op on the CPU)."""
        self._started = True
        if self.device.type != 'cuda':
            return
        for kind, items in self.parts.items():
            flat = items[0].reshape(-1) if len(items) == 1 else torch.cat([t.reshape(-1) for t in items])
            host = torch.empty(flat.numel(), dtype=flat.dtype, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            self._host[kind] = host
        self._done = torch.cuda.Event()
        self._done.record(torch.cuda.current_stream(self.device))

    def wait(self) -> None:
        """Wait for the copies (if they were started on CUDA); ``finish`` does it too."""
        if self._done is not None:
            self._done.synchronize()

    def finish(self) -> dict[str, list[np.ndarray]]:
        """Wait for the copies and return the host arrays, shaped like the queued tensors."""
        if not self._started:
            self.start()
        out: dict[str, list[np.ndarray]] = {}
        if self.device.type != 'cuda':
            for kind, items in self.parts.items():
                out[kind] = [t.detach().contiguous().numpy() for t in items]
            return out
        self.wait()  # the stream that enqueued the copies, whichever is current now
        for kind, items in self.parts.items():
            host = self._host[kind].numpy()
            arrays = []
            offset = 0
            for t in items:
                n = t.numel()
                arrays.append(host[offset:offset + n].reshape(tuple(t.shape)))
                offset += n
            out[kind] = arrays
        return out
