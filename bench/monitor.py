"""What a measured point costs the machine: a thread sampling the resident memory of this process
and its children (and the GPU through pynvml when there is one), and the CPU seconds of the same
tree between two marks."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import numpy as np
import psutil

__all__ = ["Gpu", "Monitor", "gpu_name"]


class Gpu:
    """The first GPU through pynvml (nvidia-ml-py). ``Gpu.probe()`` -> (Gpu or None, why not)."""

    def __init__(self, nvml: Any, handle: Any, name: str) -> None:
        self.nvml = nvml
        self.handle = handle
        self.name = name

    @staticmethod
    def probe() -> tuple[Gpu | None, str]:
        try:
            import pynvml  # optional and lazy: only a machine with an NVIDIA driver has a use for it

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() < 1:
                return None, "no GPU (NVML sees no device)"
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0] or 0)
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            return Gpu(pynvml, handle, name.decode() if isinstance(name, bytes) else str(name)), ""
        except Exception as e:  # noqa: BLE001 - NVMLError and friends: no GPU here, say why
            return None, f"no GPU ({type(e).__name__}: {e})"

    def utilization(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def memory_mb(self) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used) / 2**20


def gpu_name() -> str:
    """The GPU's name, or why there is none ("no GPU (...)")."""
    gpu, why = Gpu.probe()
    return gpu.name if gpu is not None else why


def _tree() -> list[psutil.Process]:
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its living descendants."""
    total = 0.0
    for p in _tree():
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (anyone's processes)."""
    t = psutil.cpu_times()
    return float(sum(t)) - t.idle - getattr(t, "iowait", 0.0)


def tree_rss_mb() -> float:
    total = 0
    for p in _tree():
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class Monitor:
    """Samples the peak resident memory of this process tree (and GPU utilisation and memory) every
    ``interval`` seconds in a daemon thread; ``mark_start``/``mark_end`` bracket the window whose CPU
    use is reported. The thread wakes 10 times a second and holds the GIL for microseconds."""

    def __init__(self, gpu: Gpu | None = None, interval: float = 0.1) -> None:
        self.gpu = gpu
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.gpu_util: list[float] = []
        self.gpu_mem_peak_mb = math.nan
        self._in_window = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._cpu0 = self._t0 = self._busy0 = 0.0
        self.cpu_seconds = math.nan
        self.machine_seconds = math.nan
        self.wall = math.nan

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, tree_rss_mb())
            if self.gpu is not None and self._in_window:
                try:
                    self.gpu_util.append(self.gpu.utilization())
                    mem = self.gpu.memory_mb()
                    self.gpu_mem_peak_mb = mem if math.isnan(self.gpu_mem_peak_mb) else max(self.gpu_mem_peak_mb, mem)
                except Exception:  # noqa: BLE001 - a failed reading is a missing sample, not a failed run
                    pass
            self._stop.wait(self.interval)

    def mark_start(self) -> None:
        self._busy0 = machine_busy_seconds()
        self._cpu0 = tree_cpu_seconds()
        self._t0 = time.perf_counter()
        self._in_window = True

    def mark_end(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu_seconds = tree_cpu_seconds() - self._cpu0
        self.machine_seconds = machine_busy_seconds() - self._busy0
        self._in_window = False

    def report(self) -> dict[str, float]:
        """cpu_cores: cores this process tree kept busy on average over the window; cpu_percent: the
        same as a share of the machine; other_cores: cores kept busy meanwhile by anything else
        (other people's jobs on a shared machine make every rate here lower)."""
        ok = self.wall and self.wall > 0
        cores = self.cpu_seconds / self.wall if ok else math.nan
        machine = self.machine_seconds / self.wall if ok else math.nan
        return {
            "cpu_cores": cores,
            "other_cores": max(0.0, machine - cores),
            "cpu_percent": 100.0 * cores / (os.cpu_count() or 1),
            "peak_rss_mb": max(self.peak_rss_mb, tree_rss_mb()),
            "gpu_util": float(np.mean(self.gpu_util)) if self.gpu_util else math.nan,
            "gpu_mem_mb": self.gpu_mem_peak_mb,
        }
