"""Reading ONNX files safely: clear errors for missing, truncated or corrupt models, and external
data loaded only from inside the model's folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from nnc.ir import ModelError

from .wire import split_weights


def load_model(source: str | os.PathLike | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    """Return the ModelProto and the folder external data is resolved against (None for in-memory)."""
    proto, base_dir, _ = load_model_and_weights(source, split=False)
    return proto, base_dir


def load_model_and_weights(source: str | os.PathLike | bytes | onnx.ModelProto, split: bool = True
                           ) -> tuple[onnx.ModelProto, Path | None, dict[str, np.ndarray]]:
    """``load_model``, and (``split``, a file or bytes) the plain top-level initializers as read-only
    views of the file's bytes, taken out of the message (``wire.split_weights``): their
    ``TensorProto`` keeps its name, type and dims but no data."""
    if isinstance(source, onnx.ModelProto):
        return source, None, {}
    if isinstance(source, (bytes, bytearray)):
        proto, weights = _parse_split(bytes(source), "<bytes>", split)
        return proto, None, weights
    path = Path(source)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an ONNX model file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror}") from None
    proto, weights = _parse_split(data, str(path), split)
    return proto, path.resolve().parent, weights


def _parse_split(data: bytes, where: str, split: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    skeleton, weights = split_weights(data) if split else (data, {})
    return _parse(skeleton, where), weights


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{where}: empty file, not an ONNX model")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"{where}: not a valid ONNX model (corrupt or truncated protobuf: {e})") from None
    if not m.HasField("graph") or (not m.graph.node and not m.graph.output):
        raise ModelError(f"{where}: not a valid ONNX model (no graph; is the file truncated or of another format?)")
    if m.ir_version <= 0:
        raise ModelError(f"{where}: not a valid ONNX model (missing ir_version)")
    if not m.opset_import:
        # required since IR version 3; a model cut off after its graph also ends up here, and
        # importing it with the default opset 1 would silently change its meaning
        raise ModelError(f"{where}: not a valid ONNX model (no opset_import; is the file truncated?)")
    return m


def tensor_to_array(t: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    """Decode an initializer, reading external data from inside ``base_dir`` only."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return _external(t, base_dir)
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - onnx raises a variety of errors for bad tensors
        raise ModelError(f"initializer {t.name!r}: cannot decode: {e}") from None


def _external(t: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if not loc:
        raise ModelError(f"initializer {t.name!r}: external data without a location")
    if base_dir is None:
        raise ModelError(f"initializer {t.name!r}: external data {loc!r} needs the model to be loaded from a file")
    target = (base_dir / loc).resolve()
    if os.path.isabs(loc) or not target.is_relative_to(base_dir):
        raise ModelError(f"initializer {t.name!r}: external data path {loc!r} escapes the model folder {base_dir}")
    if not target.is_file():
        raise ModelError(f"initializer {t.name!r}: external data file {loc!r} not found in {base_dir}")
    offset, length = _extent(t, loc, info)
    try:
        size = target.stat().st_size
        if offset > size or (length is not None and offset + length > size):
            end = "the end" if length is None else f"byte {offset + length}"
            raise ModelError(f"initializer {t.name!r}: external data {loc!r} reaches past the end of the file "
                             f"(offset {offset}, {end}; the file has {size} bytes)")
        with open(target, "rb") as f:
            f.seek(offset)
            raw = f.read() if length is None else f.read(length)
    except OSError as e:
        raise ModelError(f"initializer {t.name!r}: cannot read external data {loc!r}: {e.strerror}") from None
    copy = onnx.TensorProto()
    copy.CopyFrom(t)
    del copy.external_data[:]
    copy.data_location = onnx.TensorProto.DEFAULT
    copy.raw_data = raw
    try:
        return numpy_helper.to_array(copy)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"initializer {t.name!r}: external data {loc!r} is truncated or malformed: {e}") from None


def _extent(t: onnx.TensorProto, loc: str, info: dict[str, str]) -> tuple[int, int | None]:
    """The (offset, length) of a tensor's external data; length None means "to the end of the file"."""
    out = []
    for key, default in (("offset", "0"), ("length", None)):
        text = info.get(key, default)
        if text is None:
            out.append(None)
            continue
        try:
            n = int(text)
        except ValueError:
            raise ModelError(f"initializer {t.name!r}: external data {loc!r} has a non-integer {key} "
                             f"{text!r}") from None
        if n < 0:
            raise ModelError(f"initializer {t.name!r}: external data {loc!r} has a negative {key} ({n})")
        out.append(n)
    return out[0], out[1]
