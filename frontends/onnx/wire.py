"""The weights of an ONNX file as views of the file's bytes, without protobuf copying them.

``ModelProto.ParseFromString`` copies every initializer's ``raw_data`` into the message, and reading
the field copies it again into a Python ``bytes``: for a 440 MB BERT-base that is two extra passes
over the weights (~0.4 s of a warm compile). ``split_weights`` walks the protobuf wire format of
the model and of its main graph only (a few thousand fields: nodes are copied as they are, not
decoded), takes the ``raw_data`` of each top-level initializer out of the message, and returns the
rest (small: protobuf parses it in milliseconds) with each weight as a read-only numpy view of the
file's bytes, which is what ``numpy_helper.to_array`` would return for it.

Only plain cases are taken out: a fixed-size numeric dtype, ``raw_data`` present once, its length
equal to the dims' product, no external data or segment, a name no other initializer has.
Everything else stays in the message and is decoded by onnx as before, with its error messages.
A file that is not well-formed protobuf at the levels walked is left to ``ParseFromString`` whole.
"""

from __future__ import annotations

import numpy as np

# TensorProto.DataType -> little-endian numpy dtype, for the types stored one element per item
_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2", 11: "<f8",
           12: "<u4", 13: "<u8"}
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_T_DIMS, _T_DATA_TYPE, _T_SEGMENT, _T_NAME, _T_RAW, _T_LOCATION = 1, 2, 3, 8, 9, 14
_MIN_RAW = 1024  # smaller weights are not worth taking out


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(data: bytes, pos: int, end: int):
    """(field number, wire type, start of the field, start of its value, end of the field)."""
    while pos < end:
        start = pos
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, after = _varint(data, pos, end)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            n, pos = _varint(data, pos, end)
            after = pos + n
        elif wire == 5:
            after = pos + 4
        else:  # groups (3, 4) are not used by onnx.proto
            raise _Malformed
        if after > end:
            raise _Malformed
        yield number, wire, start, pos, after
        pos = after


def _tensor(data: bytes, pos: int, end: int) -> tuple[str, np.ndarray, bytes] | None:
    """(name, weight view, the tensor's other fields) of a plain initializer, else None."""
    name, dtype, location, raw = None, None, 0, []
    dims: list[int] = []
    kept: list[bytes] = []
    for number, wire, start, at, after in _fields(data, pos, end):
        if number == _T_RAW and wire == 2:
            raw.append((at, after))
            continue
        kept.append(data[start:after])
        if number == _T_NAME and wire == 2:
            name = data[at:after].decode("utf-8", errors="replace")
        elif number == _T_DATA_TYPE and wire == 0:
            dtype = _varint(data, at, after)[0]
        elif number == _T_LOCATION and wire == 0:
            location = _varint(data, at, after)[0]
        elif number == _T_SEGMENT:
            return None
        elif number == _T_DIMS:
            if wire == 0:
                dims.append(_varint(data, at, after)[0])
            else:
                p = at
                while p < after:
                    d, p = _varint(data, p, after)
                    dims.append(d)
    if not name or dtype not in _DTYPES or location != 0 or len(raw) != 1:
        return None
    at, after = raw[0]
    dt = np.dtype(_DTYPES[dtype])
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if any(d >= 2**62 for d in dims) or count * dt.itemsize != after - at or after - at < _MIN_RAW:
        return None
    view = np.frombuffer(data, dtype=dt, count=count, offset=at).reshape(dims)
    return name, view, b"".join(kept)


def _graph(data: bytes, pos: int, end: int) -> tuple[bytes, dict[str, np.ndarray]]:
    out: list[bytes] = []
    weights: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    plain: list[tuple[int, tuple[str, np.ndarray, bytes], int, int]] = []
    for number, wire, start, at, after in _fields(data, pos, end):
        if number == _GRAPH_INITIALIZER and wire == 2:
            t = _tensor(data, at, after)
            if t is not None:
                seen[t[0]] = seen.get(t[0], 0) + 1
                plain.append((len(out), t, start, after))
                out.append(b"")  # filled below (the field as it is when its name is not unique)
                continue
        out.append(data[start:after])
    tag = _encode_varint(_GRAPH_INITIALIZER << 3 | 2)
    for i, (name, view, rest), start, after in plain:
        if seen[name] == 1:
            out[i] = tag + _encode_varint(len(rest)) + rest
            weights[name] = view
        else:
            out[i] = data[start:after]
    return b"".join(out), weights


def split_weights(data: bytes) -> tuple[bytes, dict[str, np.ndarray]]:
    """(the model without the raw data of its plain top-level initializers, those initializers by
    name as read-only views of ``data``); ``(data, {})`` when nothing is taken out."""
    try:
        out: list[bytes] = []
        weights: dict[str, np.ndarray] = {}
        graphs = 0
        for number, wire, start, at, after in _fields(data, 0, len(data)):
            if number == _MODEL_GRAPH and wire == 2:
                graphs += 1
                body, weights = _graph(data, at, after)
                out.append(_encode_varint(_MODEL_GRAPH << 3 | 2) + _encode_varint(len(body)) + body)
            else:
                out.append(data[start:after])
    except _Malformed:
        return data, {}
    if graphs != 1 or not weights:  # a repeated graph field is merged by protobuf: leave it to it
        return data, {}
    return b"".join(out), weights
