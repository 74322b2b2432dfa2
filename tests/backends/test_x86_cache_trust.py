"""The compilation cache trusts only what this user wrote: entries signed with the per-user key, in
folders nobody else can write. A forged entry is a miss (deleted and rebuilt); an untrusted folder
turns the cache off with one warning line, and the compile still gives the right answer."""

from __future__ import annotations

import json
import os
import stat
import struct

import numpy as np
import pytest

from nnc.backends import x86
from nnc.backends.x86 import cache as x86cache
from nnc.ir import Builder, Graph, Module, interpret, tensor


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("NNC_CACHE_DIR", str(root))
    monkeypatch.setattr(x86cache, "_warned", set())  # each test sees its own warnings
    return root / "x86"


def affine(seed: int) -> Module:
    """y = relu(x @ w + b): two seeds give two models of identical structure, different weights."""
    rng = np.random.default_rng(seed)
    m = Module("affine")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 16]))
    h = b.op("matmul", x, b.const(rng.standard_normal((16, 8)).astype(np.float32), name="w"), name="h")
    y = b.op("relu", b.op("add", h, b.const(rng.standard_normal(8).astype(np.float32), name="b")), name="y")
    g.set_outputs([y], ["y"])
    return m


X = {"x": np.random.default_rng(7).standard_normal((2, 16)).astype(np.float32)}
TOL = {"rtol": 1e-5, "atol": 1e-5}  # f32 dot products of length 16 summed in another order


def entries(d) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith(x86cache.SUFFIX))


def forge(data: bytes, new_key: str) -> bytes:
    """What someone able to write the cache folder but without the secret can do: take a valid
    entry, point its header at another key and keep every checksum consistent."""
    pos = len(x86cache.MAGIC)
    (n,) = struct.unpack_from("<I", data, pos)
    header = json.loads(data[pos + 4:pos + 4 + n])
    header["key"] = new_key  # the sha256 covers the sections, which are unchanged: still right
    new = json.dumps(header).encode()
    return data[:pos] + struct.pack("<I", len(new)) + new + data[pos + 4 + n:]


def test_entry_forged_from_another_models_entry_is_rebuilt(cache_dir):
    a, b = affine(1), affine(2)
    want_a = interpret(a, X)["y"]
    assert not np.allclose(want_a, interpret(b, X)["y"], **TOL)  # else the test could not tell them apart
    x86.compile(a)
    (name_a,) = entries(cache_dir)
    x86.compile(b)
    (name_b,) = [n for n in entries(cache_dir) if n != name_a]
    key_a = name_a[:-len(x86cache.SUFFIX)]
    with open(cache_dir / name_b, "rb") as f:
        forged = forge(f.read(), key_a)
    with open(cache_dir / name_a, "wb") as f:
        f.write(forged)

    exe = x86.compile(a)
    assert exe.cache_status == "corrupt: bad signature"
    np.testing.assert_allclose(exe.run(X)["y"], want_a, **TOL)
    assert x86.compile(a).cache_status == "hit"  # the rebuilt entry is signed again
    with open(cache_dir / name_a, "rb") as f:
        assert f.read() != forged


def test_key_is_private_random_and_stable(cache_dir):
    x86.compile(affine(1))
    path = cache_dir / x86cache.KEY_FILE
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == x86cache.KEY_BYTES
    key = path.read_bytes()
    assert key != bytes(x86cache.KEY_BYTES)
    x86.compile(affine(2))
    assert path.read_bytes() == key  # created once, then reused


def test_entries_signed_with_another_key_are_misses(cache_dir):
    m = affine(1)
    x86.compile(m)
    os.unlink(cache_dir / x86cache.KEY_FILE)  # a new secret: every old entry is unauthenticated
    exe = x86.compile(m)
    assert exe.cache_status == "corrupt: bad signature"
    np.testing.assert_allclose(exe.run(X)["y"], interpret(m, X)["y"], **TOL)


def refused(capsys, m: Module, cache_dir, reason: str) -> None:
    """The compile works, without the cache, after one warning naming the problem."""
    exe = x86.compile(m)
    assert exe.cache_status == "off"
    np.testing.assert_allclose(exe.run(X)["y"], interpret(m, X)["y"], **TOL)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("nnc: warning:")]
    assert len(lines) == 1 and reason in lines[0] and "cache is disabled" in lines[0], err
    x86.compile(m)
    assert "nnc: warning" not in capsys.readouterr().err  # once per process, not per compile


def test_group_writable_cache_folder_is_refused(cache_dir, capsys):
    m = affine(1)
    x86.compile(m)
    before = entries(cache_dir)
    os.chmod(cache_dir, 0o775)
    refused(capsys, m, cache_dir, "writable by group or others")
    assert entries(cache_dir) == before  # nothing read, nothing written


def test_group_writable_cache_root_is_refused(cache_dir, capsys):
    m = affine(1)
    x86.compile(m)
    os.chmod(cache_dir.parent, 0o777)  # whoever can write the root can swap the x86 folder
    refused(capsys, m, cache_dir, "writable by group or others")


def test_folders_nnc_creates_are_private_whatever_the_umask(cache_dir, tmp_path):
    old = os.umask(0)
    try:
        x86.compile(affine(1), {"cache_dir": str(tmp_path / "a" / "b")})
        x86.compile(affine(1))
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b", cache_dir.parent, cache_dir):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert len(entries(tmp_path / "a" / "b")) == 1 and len(entries(cache_dir)) == 1


def test_folder_owned_by_someone_else_is_refused(cache_dir, capsys, monkeypatch):
    m = affine(1)
    x86.compile(m)
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)  # the folder is now another user's
    refused(capsys, m, cache_dir, "not by you")


def test_readable_key_is_refused(cache_dir, capsys):
    m = affine(1)
    x86.compile(m)
    os.chmod(cache_dir / x86cache.KEY_FILE, 0o644)
    refused(capsys, m, cache_dir, "must be yours and private")


def test_key_that_is_a_symlink_is_refused(cache_dir, capsys, tmp_path):
    m = affine(1)
    x86.compile(m)
    elsewhere = tmp_path / "planted.key"
    elsewhere.write_bytes(bytes(32))
    os.chmod(elsewhere, 0o600)
    os.unlink(cache_dir / x86cache.KEY_FILE)
    os.symlink(elsewhere, cache_dir / x86cache.KEY_FILE)
    refused(capsys, m, cache_dir, "symbolic link")


RACE = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_x86_cache_trust import X, affine
from nnc.backends import x86
exe = x86.compile(affine(int(sys.argv[2])))
print(exe.cache_status, float(exe.run(X)["y"].sum()))
"""


def test_processes_racing_on_an_empty_cache_agree_on_one_key(cache_dir):
    """Four processes start on an empty cache at once: one key is made, no process fails or warns,
    and each entry written is then a hit for everyone (signed with the key that won)."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    procs = [subprocess.Popen([sys.executable, "-c", RACE, here, str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2, 3, 4)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.startswith("miss") and "warning" not in err, (out, err)
    # besides the entries: the key, the kernel cache's folder and (once a hit verified an entry)
    # the signed memo of verified entries; no temporary file
    memo = x86cache.VERIFIED_FILE
    assert sorted(n for n in os.listdir(cache_dir) if not n.endswith(x86cache.SUFFIX) and n != memo) == \
        ["kernels", x86cache.KEY_FILE]
    # the kernel cache signs with the same key and leaves no temporary files either
    assert all(n.endswith(x86cache.SUFFIX) or n == memo for n in os.listdir(cache_dir / "kernels"))
    assert len(entries(cache_dir)) == 4
    for seed in (1, 2, 3, 4):
        assert x86.compile(affine(seed)).cache_status == "hit"


def test_an_entry_verified_and_unchanged_is_not_hashed_again_but_any_change_is_caught(cache_dir, monkeypatch):
    """A hit hashes the entry's bytes once; the next hit of the same, unchanged file trusts the signed
    memo of verified entries (inode, size, mtime and ctime, as git's index does). Rewriting a byte
    in place, even with the mtime set back, moves the ctime: the entry is hashed again and refused."""
    want = interpret(affine(3), X)["y"]
    x86.compile(affine(3))
    (name,) = entries(cache_dir)
    hashed = []
    real = x86cache.content_digest
    monkeypatch.setattr(x86cache, "content_digest", lambda sections: hashed.append(1) or real(sections))
    cache = x86cache.CompileCache(str(cache_dir))
    key = name[:-len(x86cache.SUFFIX)]
    for expect_hashes in (1, 0, 0):  # the first hit verifies, later ones find it unchanged
        hashed.clear()
        entry, status = cache.get(key)
        assert status == "hit" and len(hashed) == expect_hashes
        del entry
    path = cache_dir / name
    st = os.stat(path)
    with open(path, "r+b") as f:  # flip the last byte (the weights), same size, same file
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime set back; the ctime cannot be
    hashed.clear()
    entry, status = cache.get(key)
    assert entry is None and status == "corrupt: checksum mismatch" and len(hashed) == 1
    exe = x86.compile(affine(3))  # rebuilt, and right
    np.testing.assert_allclose(exe.run(X)["y"], want, **TOL)


def test_a_memo_not_signed_with_the_key_is_ignored(cache_dir):
    x86.compile(affine(4))
    (name,) = entries(cache_dir)
    key = name[:-len(x86cache.SUFFIX)]
    cache = x86cache.CompileCache(str(cache_dir))
    assert cache.get(key)[1] == "hit"
    memo = cache_dir / x86cache.VERIFIED_FILE
    mac, _, body = memo.read_bytes().partition(b"\n")
    assert key in json.loads(body)
    path = cache_dir / name
    with open(path, "r+b") as f:  # tamper, then forge the memo to vouch for the tampered file
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    st = os.stat(path)
    forged = {key: [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]}
    memo.write_bytes(b"0" * len(mac) + b"\n" + json.dumps(forged).encode())
    assert cache.get(key)[1] == "corrupt: checksum mismatch"
