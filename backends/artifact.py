"""Writing and reading artifacts: all-or-nothing files, the text-IR form of a module, manifests.

``Staging`` writes a set of files under temporary names beside their destinations and renames them
all into place only when every one was written, so an interrupted or failed save never leaves a
half-written file behind (or a new library next to an old header). The text-IR artifact of a module
is ``NAME.nnc`` (the printed IR, weights by reference) plus ``NAME.npz`` (the weights); both the
reference target's ``save`` and ``nnc compile -o FILE.nnc`` write it, and ``load_text_ir`` reads it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import os
import tempfile
import zipfile
from typing import Any, Mapping

import numpy as np

from nnc.ir import DType, ModelError, Module, ParseError, parse_module, print_module


@functools.lru_cache(maxsize=1)
def nnc_version() -> str:
    """The installed nnc's version (pyproject.toml is the one place it is written)."""
    try:
        return importlib.metadata.version("nnc")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Staging:
    """All-or-nothing output files: each is written under a temporary name beside its destination;
    leaving the ``with`` block normally renames them all into place, an exception deletes them."""

    def __init__(self) -> None:
        self.temps: list[tuple[str, str, bool]] = []  # (temp, destination, executable)
        umask = os.umask(0)
        os.umask(umask)
        self.umask = umask

    def temp_for(self, path: str, executable: bool = False) -> str:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                       dir=os.path.dirname(os.path.abspath(path)))
        except OSError as e:  # name the file the caller asked for, not our temp file
            raise OSError(e.errno, f"cannot write: {e.strerror}", path) from None
        os.close(fd)
        self.temps.append((tmp, path, executable))
        return tmp

    def write(self, path: str, data: bytes) -> None:
        tmp = self.temp_for(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as e:
            raise OSError(e.errno, f"cannot write: {e.strerror}", path) from None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                for tmp, _, executable in self.temps:  # mkstemp makes 0600 files: give the usual modes
                    os.chmod(tmp, (0o777 if executable else 0o666) & ~self.umask)
                for tmp, path, _ in self.temps:
                    try:
                        os.replace(tmp, path)
                    except OSError as e:
                        raise OSError(e.errno, f"cannot write: {e.strerror}", path) from None
        finally:
            for tmp, _, _ in self.temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)


def write_files(contents: Mapping[str, bytes]) -> None:
    """Write several files all-or-nothing (see ``Staging``)."""
    with Staging() as out:
        for path, data in contents.items():
            out.write(path, data)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    # np.savez(**arrays) would take a weight named "file" or "allow_pickle" for its own argument;
    # this writes the same archive format (one KEY.npy per array) without that trap
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for key, a in arrays.items():
            with z.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, default=str) + "\n").encode()


def sibling(path: str, ext: str) -> str:
    """``model.so`` -> ``model.json`` (``ext`` with its dot)."""
    return os.path.splitext(path)[0] + ext


# -- the text-IR artifact ----------------------------------------------------------------------------
def text_ir_files(module: Module, path: str) -> dict[str, bytes]:
    """The files of ``module`` saved as ``path`` (``*.nnc``): the IR text and its weights."""
    return {path: print_module(module).encode(), sibling(path, ".npz"): npz_bytes(dict(module.constants))}


def _from_npz(a: np.ndarray) -> np.ndarray:
    # numpy stores ml_dtypes' bfloat16 as raw 2-byte records; bf16 is the only such dtype nnc has
    return a.view(DType.bf16.numpy) if a.dtype.kind == "V" and a.dtype.itemsize == 2 else a


def load_text_ir(path: str) -> Module:
    """A module from ``NAME.nnc``, with the weights of ``NAME.npz`` beside it when present."""
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not an nnc text IR file")
    weights = None
    npz = sibling(path, ".npz")
    if os.path.exists(npz):
        try:
            with np.load(npz, allow_pickle=False) as z:
                weights = {k: _from_npz(z[k]) for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ModelError(f"{npz}: cannot read the weights of {path}: {e}") from None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not an nnc text IR file (not UTF-8 text)") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_module(text, weights)
    except ParseError as e:
        raise ParseError(f"{path}: {e}") from None


def read_manifest(path: str) -> dict[str, Any] | None:
    """The JSON manifest at ``path``, or None when there is none; a damaged one is a ``ModelError``."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(man, dict):
        raise ModelError(f"{path}: the manifest is not a JSON object")
    return man
