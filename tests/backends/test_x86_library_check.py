"""``nnc.load`` checks a library before mapping it: a truncated, damaged or foreign file is a
``ModelError``, never a SIGBUS. The library is built through the CLI, the way users build it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.backends.x86.library_check import check_library, file_digest
from nnc.cli import main as cli_main
from nnc.ir import ModelError

CNN = str(Path(__file__).resolve().parents[2] / "examples" / "cnn.onnx")
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="AOT links with gcc")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lib") / "cnn.so"
    assert cli_main(["compile", CNN, "--target", "x86", "-o", str(path), "-q"]) in (0, None)
    return path


def copy(library: Path, dest: Path, data: bytes | None = None, sidecar: bool = True) -> Path:
    dest.write_bytes(library.read_bytes() if data is None else data)
    if sidecar:
        dest.with_suffix(".json").write_text(library.with_suffix(".json").read_text())
    return dest


def test_manifest_records_size_and_sha256_of_the_library(library: Path) -> None:
    import hashlib

    manifest = json.loads(library.with_suffix(".json").read_text())
    data = library.read_bytes()
    assert manifest["library_bytes"] == len(data)
    assert manifest["library_sha256"] == hashlib.sha256(data).hexdigest()
    assert file_digest(str(library)) == (len(data), hashlib.sha256(data).hexdigest())


def test_intact_library_loads_and_runs(library: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    want = nnc.compile(CNN, target="reference").run({"image": x})
    got = nnc.load(library).run({"image": x})
    (name,) = want
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)  # f32 conv sums, other order


TRUNCATE_SCRIPT = r"""
import sys
import nnc
from nnc.ir import ModelError
path, n = sys.argv[1], int(sys.argv[2])
data = open(sys.argv[3], "rb").read()
for cut in sorted({0, 3, 20, 63, 64, 200, n // 4, n // 2, 3 * n // 4, n - 4096, n - 100, n - 1}):
    open(path, "wb").write(data[:cut])
    try:
        nnc.load(path)
    except ModelError as e:
        print(cut, "ModelError", str(e).splitlines()[0], flush=True)
    else:
        print(cut, "LOADED", flush=True)
"""


def test_truncated_library_is_a_model_error_not_sigbus(library: Path, tmp_path: Path) -> None:
    """Without the manifest beside it, only the ELF checks stand between dlopen and SIGBUS. In a
    subprocess, so that a regression kills that process rather than the test run."""
    target = tmp_path / "short.so"
    n = library.stat().st_size
    proc = subprocess.run([sys.executable, "-c", TRUNCATE_SCRIPT, str(target), str(n), str(library)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode} (negative: killed by a signal)\n{proc.stdout}{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 12 and all(" ModelError " in ln for ln in lines), proc.stdout
    assert any("past the end" in ln for ln in lines) and any("ELF" in ln for ln in lines)


def test_damaged_library_fails_its_manifest_hash(library: Path, tmp_path: Path) -> None:
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0x40  # same size, one bit: only the hash can tell
    lib = copy(library, tmp_path / "cnn.so", bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        nnc.load(lib)


def test_library_of_another_size_than_recorded_is_refused(library: Path, tmp_path: Path) -> None:
    lib = copy(library, tmp_path / "cnn.so", library.read_bytes() + b"\0" * 16)  # ELF-valid, longer
    with pytest.raises(ModelError, match="records"):
        nnc.load(lib)
    check_library(str(lib), None)  # without the manifest, trailing bytes are harmless


def test_manifest_without_the_fields_only_gets_elf_checks(library: Path, tmp_path: Path) -> None:
    lib = copy(library, tmp_path / "cnn.so")
    manifest = json.loads(lib.with_suffix(".json").read_text())
    del manifest["library_bytes"], manifest["library_sha256"]  # as written by an older nnc
    lib.with_suffix(".json").write_text(json.dumps(manifest))
    assert nnc.load(lib).output_names


def test_unreadable_manifest_is_a_model_error(library: Path, tmp_path: Path) -> None:
    lib = copy(library, tmp_path / "cnn.so")
    lib.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable manifest"):
        nnc.load(lib)


@pytest.mark.parametrize("offset, value, why", [(4, 1, "64-bit"), (5, 2, "little-endian"), (18, 183, "machine 183"),
                                                (16, 2, "not a shared object")])
def test_foreign_elf_files_are_refused(library: Path, tmp_path: Path, offset: int, value: int, why: str) -> None:
    data = bytearray(library.read_bytes())
    data[offset] = value  # EI_CLASS, EI_DATA, e_machine (aarch64 is 183), e_type (ET_EXEC is 2)
    lib = copy(library, tmp_path / "cnn.so", bytes(data), sidecar=False)
    with pytest.raises(ModelError, match=why):
        nnc.load(lib)


def test_not_an_elf_file_is_refused(tmp_path: Path) -> None:
    lib = tmp_path / "model.so"
    lib.write_text("#!/bin/sh\necho not a library\n")
    with pytest.raises(ModelError, match="no ELF magic"):
        nnc.load(lib)
