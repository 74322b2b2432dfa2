"""What an ATen converter works with: the FX node with its arguments bound to the op schema's names
(tensors as IR values), and a context that builds IR ops, folds constants and converts dtypes.

The context is the ONNX frontend's (``ConvertContext``: op creation with constant folding, dynamic
attributes) with torch-specific helpers on top, so both frontends fold and name the same way.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nnc.frontends.onnx.context import ConvertContext
from nnc.ir import DType, UnsupportedOpError, Value

_DTYPES: dict[str, DType] = {
    "torch.float32": DType.f32, "torch.float64": DType.f64, "torch.float16": DType.f16,
    "torch.bfloat16": DType.bf16, "torch.int64": DType.i64, "torch.int32": DType.i32,
    "torch.int16": DType.i16, "torch.int8": DType.i8, "torch.uint8": DType.u8, "torch.bool": DType.bool,
    "torch.uint16": DType.u16, "torch.uint32": DType.u32, "torch.uint64": DType.u64,
}


def dtype_from_torch(dtype: Any, where: str = "") -> DType:
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise UnsupportedOpError(f"{where}tensor element type {dtype} is not supported "
                                 f"(supported: {', '.join(sorted(_DTYPES))})") from None


def module_path(fx_node: Any) -> tuple[str, str]:
    """(module path, module class) of the innermost ``nn.Module`` an FX node comes from."""
    stack = fx_node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    cls = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
    return str(path), cls


class AtenNode:
    """One ``call_function`` node as a converter sees it: ``arg(name)`` by schema name, with FX
    nodes replaced by IR values (tensors) and run-time symbolic ints by 0-d i64 values."""

    def __init__(self, fx_node: Any, target_name: str, args: dict[str, Any], positional: list[Any]):
        self.fx = fx_node
        self.target = target_name
        self.name = fx_node.name
        self.args = args
        self.positional = positional
        self.path, self.module_class = module_path(fx_node)

    def arg(self, name: str, default: Any = None) -> Any:
        v = self.args.get(name, default)
        return default if v is None else v

    def has(self, name: str) -> bool:
        return self.args.get(name) is not None

    @property
    def val(self) -> Any:
        return self.fx.meta.get("val")

    def out_dtype(self, i: int | None = None) -> DType:
        v = self.val
        if i is not None:
            v = v[i]
        return dtype_from_torch(v.dtype, f"{self.describe()}: ")

    def out_shape(self, i: int | None = None) -> tuple[Any, ...]:
        v = self.val
        if i is not None:
            v = v[i]
        return tuple(v.shape)

    def static_out_shape(self) -> tuple[int, ...] | None:
        shape = self.out_shape()
        return shape if all(isinstance(d, int) for d in shape) else None

    def describe(self) -> str:
        where = f" in module {self.path!r} ({self.module_class})" if self.path else ""
        return f"{self.target} node {self.name!r}{where}"

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.describe()}: {why}")


class TorchContext(ConvertContext):
    node: Any

    def _name(self, what: str) -> str:
        if self.node is None:
            return what
        return f"{self.node.result_name}.{what}"

    def op1(self, opname: str, *operands: Value, **attrs: Any) -> Value:
        """An op of which only the first result is wanted (layer_norm, max_pool, attention...)."""
        r = self.op(opname, *operands, **attrs)
        return r[0] if isinstance(r, list) else r

    # -- values -------------------------------------------------------------------------------
    def tensor(self, v: Any, dtype: DType) -> Value:
        """A tensor operand: an IR value (cast to ``dtype``) or a Python scalar as a 0-d constant."""
        if isinstance(v, Value):
            return self.cast(v, dtype)
        return self.scalar(v, dtype)

    def ints(self, v: Any) -> list[int]:
        if isinstance(v, (list, tuple)):
            return [int(x) for x in v]
        return [int(v)]

    def axis(self, dim: int, rank: int) -> int:
        return dim + rank if dim < 0 else dim

    def shape_operand(self, dims: Sequence[Any]) -> Value | tuple[int, ...]:
        """A target shape from an ATen size list: a tuple when every dim is a Python int, else a
        1-d i64 value concatenated from constants and run-time (symbolic) dims."""
        if all(isinstance(d, int) for d in dims):
            return tuple(int(d) for d in dims)
        parts = [self.op("reshape", self.cast(d, DType.i64), shape=(1,)) if isinstance(d, Value)
                 else self.const(np.array([int(d)], np.int64)) for d in dims]
        return self.op("concat", *parts, axis=0)

    def reshape(self, x: Value, dims: Sequence[Any]) -> Value:
        shape = self.shape_operand(dims)
        if isinstance(shape, tuple):
            return self.op("reshape", x, shape=shape)
        return self.op_dynamic("reshape", [x], {"shape": shape})
