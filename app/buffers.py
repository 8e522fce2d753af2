"""Body buffers: the large scratch arrays that request bodies are received into, kept for
the next request once nothing refers to them any more.

Fresh memory is slow. A 256³ uint64 ``POST raw`` body is 128 MiB; received into a new
array every time, each of its pages is faulted in and zeroed by the kernel on first touch,
and a VM that hands freed memory back to its host pays the host's fault too. On the
2-core machine, page zeroing was 8% of the server's CPU during labelmap ingest of 256³
pieces; receiving into a kept buffer made the POSTs 7-15% faster in interleaved A/B runs.

Huge pages make fresh memory slower still on such a VM. numpy advises transparent huge
pages for arrays of 4 MiB and more, and a huge page comes from the 2 MiB free blocks that
the guest reports back to its host (virtio-balloon free page reporting, here at order 9):
the host faults all of it in again, where 4 KiB pages are mostly found among the small
free blocks the guest kept. On the 2-core machine, touching a fresh 128 MiB array 3 s
after the last one was freed took 0.35-1.6 s with the advice (in five processes of
three; 18-27 ms in a sixth) and 70-107 ms without it, and a fresh server's first 256³
labelmap ``POST raw`` received its body in 1.15 s against 0.32 s. So
:func:`advise_huge_pages` is off unless ``huge_pages`` is set.

A kept buffer is handed out again only when the pool holds its only reference. Every numpy
view of a buffer (and every memoryview of those) refers to it, so no reader or writer of
an earlier request (a staging write still encoding, a block still being indexed) can see
its bytes change.
"""

from __future__ import annotations

import importlib
import sys
import threading

import numpy as np


def advise_huge_pages(enabled: bool) -> bool:
    """Set whether numpy asks for transparent huge pages for its large arrays, from now
    on and in the whole process (numpy's own switch, also read from
    ``NUMPY_MADVISE_HUGEPAGE`` when numpy is imported); whether it did before."""
    # A private function (stable since numpy 1.20) in a module numpy 2 renamed: looked
    # up by name, as numpy's stubs declare neither.
    major = int(np.__version__.split(".")[0])
    multiarray = importlib.import_module(f"numpy.{'_core' if major >= 2 else 'core'}.multiarray")
    return bool(multiarray._set_madvise_hugepage(enabled))


class BodyBuffers:
    """Up to ``capacity`` bytes of uint8 arrays kept for reuse (``body_buffer_bytes``).

    A request bigger than the capacity gets an array of its own, as does one arriving
    while every kept buffer is in use and no free one can make room for another."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._kept: list[np.ndarray] = []  # most recently handed out last
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """An uninitialised uint8 array of ``nbytes``: the smallest free kept buffer that
        is large enough (a view of its first ``nbytes``), or a new one, kept if it fits."""
        with self._lock:
            free = [i for i in range(len(self._kept)) if self._is_free(i)]
            fitting = [i for i in free if self._kept[i].size >= nbytes]
            if fitting:
                best = min(fitting, key=lambda i: self._kept[i].size)
                buffer = self._kept.pop(best)
                self._kept.append(buffer)
                return buffer[:nbytes]
            buffer = np.empty(nbytes, dtype=np.uint8)
            excess = self.held + nbytes - self.capacity
            dropped = set()
            for i in free:  # the free ones are all too small: drop the oldest first
                if excess <= 0:
                    break
                dropped.add(i)
                excess -= self._kept[i].size
            if excess <= 0:
                self._kept = [b for i, b in enumerate(self._kept) if i not in dropped]
                self._kept.append(buffer)
            return buffer

    @property
    def held(self) -> int:
        """Bytes of the kept buffers, in use or not."""
        return sum(buffer.size for buffer in self._kept)

    def _is_free(self, i: int) -> bool:
        # getrefcount counts its own argument: 2 means the list's is the only other one
        return sys.getrefcount(self._kept[i]) == 2
