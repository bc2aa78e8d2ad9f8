"""Keep freed host memory in the C allocator, so large CPU graphs cost the same per atom.

glibc serves every allocation above its mmap threshold (at most 32 MB by default)
with a fresh ``mmap`` and gives it back with ``munmap`` when freed. A 10,000-atom
crystal has per-edge tensors of ~80 MB, so every energy+forces+stress call maps
them anew, and the kernel zero-fills each page on first touch: that page-fault
traffic, not the arithmetic, made the default model's cost per atom about twice as
high at 10,000 atoms as at 300. With a higher mmap threshold and trim threshold the
freed buffers stay in the process heap and are reused by the next call (the
resident memory stays at its peak instead of shrinking between calls; a CPU version
of what PyTorch's CUDA caching allocator does). Trimming is turned off completely
(``M_TRIM_THRESHOLD = -1``): with glibc's largest finite threshold (2 GB), a 10,000-atom
call freed more than that at its end, the heap top went back to the OS, and the next
call page-faulted it in again (on an idle machine, with the layer recomputation of that
time: 807 instead of 320 µs per atom).
"""

from __future__ import annotations

import ctypes
import platform
import sys

#: ``mallopt`` parameter numbers (glibc ``malloc.h``)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: allocations up to this size (bytes) come from the heap, not from ``mmap``
KEEP_MMAP_THRESHOLD = 1 << 30
#: free memory at the top of the heap is never returned to the OS (glibc: -1 turns trimming off)
KEEP_TRIM_THRESHOLD = -1
#: the largest mmap threshold older glibc versions accept (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit)
_MAX_CAPPED_MMAP_THRESHOLD = 32 * 1024 * 1024
#: glibc's defaults (fixed values: restoring them turns off its dynamic threshold)
_DEFAULT_THRESHOLD = 128 * 1024

_state = {"keep": False}


def _mallopt():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def reuse_host_memory(keep: bool = True) -> bool:
    """Let the C allocator keep freed buffers for reuse (``keep=True``) or return
    large ones to the operating system again (``keep=False``, glibc's defaults).

    Process-wide and idempotent; it overrides ``MALLOC_TRIM_THRESHOLD_`` and
    ``MALLOC_MMAP_THRESHOLD_``. Returns whether the setting is in effect: ``False``
    where the allocator is not glibc's (macOS, Windows, musl), where nothing changes.
    Used on CPU by :class:`GNNCalculator`, the batched relaxer and
    :class:`~crystalgnn_plugins.generation.CrystalStructureSource` unless disabled
    with ``reuse_memory=False``. ``keep=False`` also hands the free memory the
    process holds back to the operating system (``malloc_trim``).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if _state["keep"] == keep:
        return True
    if keep:
        # glibc versions that cap the mmap threshold at 32 MiB refuse 1 GiB: take the cap
        ok_mmap = bool(mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)) or bool(
            mallopt(_M_MMAP_THRESHOLD, _MAX_CAPPED_MMAP_THRESHOLD))
        ok = bool(mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)) and ok_mmap
    else:
        ok = bool(mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)) and bool(
            mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD))
        _malloc_trim()
    if ok:
        _state["keep"] = keep
    return ok


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - glibc has it
        pass


def host_memory_reused() -> bool:
    """Whether :func:`reuse_host_memory` is in effect in this process."""
    return _state["keep"]
