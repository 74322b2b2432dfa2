"""C source text for the generated library wrappers: string literals and the C type of each dtype."""

from __future__ import annotations

from nnc.ir import DType

C_TYPES = {
    DType.f64: "double", DType.f32: "float", DType.f16: "uint16_t", DType.bf16: "uint16_t",
    DType.i64: "int64_t", DType.i32: "int32_t", DType.i16: "int16_t", DType.i8: "int8_t",
    DType.u64: "uint64_t", DType.u32: "uint32_t", DType.u16: "uint16_t", DType.u8: "uint8_t",
    DType.bool: "uint8_t",
}


def c_literal(s: str) -> str:
    out = []
    for ch in s.encode():
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def header_open(guard: str, prefix: str) -> list[str]:
    """A generated header's lines after its comment: include guard, includes, the context type."""
    return [f"#ifndef {guard}", f"#define {guard}", "", "#include <stddef.h>", "#include <stdint.h>", "",
            "#ifdef __cplusplus", 'extern "C" {', "#endif", "", f"typedef struct {prefix}_ctx {prefix}_ctx;", ""]


def header_close(guard: str) -> list[str]:
    return ["#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */", ""]
