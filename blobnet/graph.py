"""A network as ONNX bytes, written directly in protobuf's wire format (what ONNX Runtime reads).

The ``onnx`` package would build the same bytes, but importing it takes about a second (its
``ml_dtypes`` dependency), on every start of every command; the few messages a feed-forward graph
needs are simple to write. Field numbers are those of onnx.proto (ModelProto, GraphProto,
NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto, TensorShapeProto); a test runs
the bytes in ONNX Runtime against PyTorch.

    g = Graph()
    y = g.node("Relu", ["x"])
    onnx_bytes = g.model(inputs=[("x", FLOAT, ["batch", 8])], outputs=[(y, FLOAT, ["batch", 8])])
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

__all__ = ["Graph", "FLOAT"]

# TensorProto.DataType
FLOAT = 1
IR_VERSION = 8  # ONNX 1.10 and later: opset 17 needs at least 8
_ATTR_FLOAT, _ATTR_INT = 1, 2  # AttributeProto.AttributeType
Value = tuple[str, int, Sequence[int | str]]  # a graph input or output: name, element type, shape


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode())


def _float(field: int, x: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", x)


def _value_info(name: str, elem_type: int, shape: Sequence[int | str]) -> bytes:
    dims = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_type = _int(1, elem_type) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


class Graph:
    """Nodes, initializers, inputs and outputs of one graph, serialised as they are added."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        """A float32 initializer named ``name``; returns the name."""
        a = np.ascontiguousarray(array, dtype=np.float32)
        tensor = b"".join(_int(1, d) for d in a.shape) + _int(2, FLOAT) + _str(8, name) + _bytes(9, a.tobytes())
        self._parts.append(_bytes(5, tensor))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str | None = None, **attrs: int | float) -> str:
        """Node ``op`` over ``inputs`` with int or float attributes; returns its output's name."""
        self._count += 1
        out = name or f"{op.lower()}_{self._count}"
        body = b"".join(_str(1, i) for i in inputs) + _str(2, out) + _str(3, out) + _str(4, op)
        for key, value in attrs.items():
            if isinstance(value, float):
                attr = _str(1, key) + _float(2, value) + _int(20, _ATTR_FLOAT)
            else:
                attr = _str(1, key) + _int(3, value) + _int(20, _ATTR_INT)
            body += _bytes(5, attr)
        self._parts.append(_bytes(1, body))
        return out

    def model(self, inputs: Sequence[Value], outputs: Sequence[Value], opset: int = 17) -> bytes:
        """The serialised ModelProto: ``inputs`` and ``outputs`` as (name, element type, shape), a
        string in a shape naming a dimension of any size."""
        graph = b"".join(self._parts) + _str(2, "blobnet")
        graph += b"".join(_bytes(11, _value_info(*i)) for i in inputs)
        graph += b"".join(_bytes(12, _value_info(*o)) for o in outputs)
        opset_id = _str(1, "") + _int(2, opset)
        return _int(1, IR_VERSION) + _str(2, "blobnet") + _bytes(7, graph) + _bytes(8, opset_id)
