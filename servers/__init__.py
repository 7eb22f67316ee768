"""Inference: the async batcher that owns the model (servers/batcher.py, its backends in
servers/backends.py), and the socket front serving it to other processes (servers/socket.py, the
wire format in servers/wire.py, the shared-memory rings of local clients in servers/shm.py). The
evaluator protocol and its errors live in blobnet.evaluator; they are re-exported here for
convenience."""

from blobnet.evaluator import EvaluationError, Evaluator, EvaluatorClosed
from servers.batcher import MODES, Batcher, BatcherStats, RowsResult

__all__ = ["MODES", "Batcher", "BatcherStats", "EvaluationError", "Evaluator", "EvaluatorClosed", "RowsResult"]
