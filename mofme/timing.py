"""Measurement helpers shared by the benchmarks: side-by-side medians, FLOPs, peak memory, machine."""

from __future__ import annotations

import contextlib
import ctypes
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_gflops", "machine", "peak_memory_mb", "peak_rss_mb", "time_side_by_side"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    fns: dict[str, Callable[[], object]], *, warmup: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds of each callable; the callables are interleaved repeat by repeat, so that
    slow drifts of the machine hit all of them alike (synchronised on CUDA)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def count_gflops(fn: Callable[[], object]) -> float:
    """GFLOPs of one call (``torch.utils.flop_counter``: matmuls and convolutions, 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def peak_memory_mb(fn: Callable[[], object], device: torch.device, module: torch.nn.Module) -> float:
    """Peak memory of one call of ``fn``, parameters of ``module`` included, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: torch's ``MemTracker``, which follows every
    tensor's storage (parameters, activations and temporaries; not the Python heap)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(module)
    with tracker:
        fn()
    return tracker.get_tracker_snapshot("peak")[device]["Total"] / 2**20


def peak_rss_mb(fn: Callable[[], object]) -> tuple[float, float] | None:
    """Peak resident memory of the process during one call of ``fn``, in MiB: ``(peak, peak - before)``,
    everything the process holds (Python, libraries, the model, every buffer). For calls that
    :func:`peak_memory_mb` cannot follow (a module called many times, oneDNN's opaque tensors). Linux
    only (``/proc/self/clear_refs`` resets the high-water mark); None elsewhere."""
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def read(field: str) -> float:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read_text()).group(1)) / 1024

    try:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back what earlier calls freed
        before = read("VmRSS")
        clear.write_text("5")
    except (OSError, AttributeError):
        return None
    fn()
    peak = read("VmHWM")
    return peak, peak - before


def machine() -> dict:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }
