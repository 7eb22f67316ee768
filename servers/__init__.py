"""Inference: the async batcher that owns the model, and the socket front serving it to other processes."""

from servers.batcher import (
    MODES,
    Batcher,
    BatcherStats,
    EvaluationError,
    Evaluator,
    EvaluatorClosed,
    RowsResult,
)

__all__ = ["MODES", "Batcher", "BatcherStats", "EvaluationError", "Evaluator", "EvaluatorClosed", "RowsResult"]
