"""The batcher's statistics: batches, rows, batch-size percentiles and histogram, queue wait,
forward time and the time the device sat idle."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["BatcherStats"]


class BatcherStats:
    """Counters since the last reset; cheap per batch (a few additions), summarised by ``as_dict``."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.reset()

    def reset(self) -> None:
        self.t_start = time.perf_counter()
        self.batches = 0
        self.rows = 0
        self.failed_batches = 0
        self.failed_rows = 0  # rows that failed alone (NaN, bad legal ids)
        self.size_counts = [0] * (self.max_batch + 1)  # batches of each size: exact percentiles, no list of sizes
        self.queue_wait = 0.0  # seconds from a batch's first submit to its launch, summed over batches
        self.queue_wait_max = 0.0
        self.forward = 0.0  # seconds from launch to results, summed over batches
        self.busy = 0.0  # seconds the device had a batch in flight (overlapping batches counted once)
        self.busy_until = self.t_start

    def record(self, n: int, t0: float, t_launch: float, t_end: float) -> None:
        self.batches += 1
        self.rows += n
        self.size_counts[n] += 1
        wait = t_launch - t0
        self.queue_wait += wait
        if wait > self.queue_wait_max:
            self.queue_wait_max = wait
        self.forward += t_end - t_launch
        start = max(t_launch, self.busy_until)
        if t_end > start:
            self.busy += t_end - start
            self.busy_until = t_end

    def percentile(self, q: float) -> int:
        """Smallest batch size with at least ``q`` (0..1) of the batches at or below it; 0 with no batches."""
        need = q * self.batches
        seen = 0
        for size, c in enumerate(self.size_counts):
            seen += c
            if c and seen >= need:
                return size
        return 0

    def histogram(self) -> dict[str, int]:
        """Batches per power-of-two size bucket, e.g. {"1": 3, "2-3": 0, "4-7": 12, ...}."""
        out: dict[str, int] = {}
        lo = 1
        while lo <= self.max_batch:
            hi = min(2 * lo - 1, self.max_batch)
            out[str(lo) if lo == hi else f"{lo}-{hi}"] = sum(self.size_counts[lo : hi + 1])
            lo *= 2
        return out

    def as_dict(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t_start
        b = max(self.batches, 1)
        return {
            "batches": self.batches,
            "rows": self.rows,
            "mean_batch": self.rows / b,
            "p10_batch": self.percentile(0.1),
            "p50_batch": self.percentile(0.5),
            "p90_batch": self.percentile(0.9),
            "p99_batch": self.percentile(0.99),
            "max_batch": max((s for s, c in enumerate(self.size_counts) if c), default=0),
            "histogram": self.histogram(),
            "failed_batches": self.failed_batches,
            "failed_rows": self.failed_rows,
            "queue_wait_mean_ms": 1e3 * self.queue_wait / b,
            "queue_wait_max_ms": 1e3 * self.queue_wait_max,
            "forward_mean_ms": 1e3 * self.forward / b,
            "forward_total_s": self.forward,
            "device_idle_s": max(wall - self.busy, 0.0),
            "device_idle_fraction": max(wall - self.busy, 0.0) / wall if wall > 0 else 0.0,
            "wall_s": wall,
            "rows_per_s": self.rows / wall if wall > 0 else 0.0,
        }
