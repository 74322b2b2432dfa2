"""The x86 compilation cache: optimised object code plus what the executable needs, on disk.

An entry is keyed by a hash of everything the machine code depends on: the graph text, the weights,
the target description (CPU name + feature list), the options, and a fingerprint of nnc's own
source (the IR, the passes and this backend), llvmlite and LLVM, so a change to a kernel never
loads stale code. A hit skips preparation, code generation and LLVM entirely: the object file is
linked into this process by the JIT (see ``executable.load_object``).

One entry is one file ``<dir>/x86/<key>.nncx``::

    b"NNCX86\\0\\3"  u32 header length  header (JSON)  HMAC (32 bytes)  object  meta (JSON)  padding  weights

The header names the key, the section sizes and the digest of the sections (``content_digest``:
SHA-256 over the SHA-256 of each 4 MB chunk, so the chunks of a big model are hashed on every core
at once); the HMAC-SHA256, under a per-user secret (``<dir>/x86/secret.key``, 32 random bytes, mode
0600), covers the magic, the key and the header, and so, through the digest, every byte of every
section: a hit hashes the entry once. The padding puts the weights at a 64-byte aligned offset, so a
hit maps the file (``mmap``, read-only) and the executable reads the weights from the mapping in
place instead of copying hundreds of MB; the file is mapped only when it is ours, not writable by
anyone else and has one link, so nobody else can change the bytes after they were checked.

A file that is short, garbled, for another key, fails its checksum or its signature is deleted and
rebuilt, never loaded: the object is machine code we are about to execute, and the checksum alone
only catches accidents (anyone can recompute a SHA-256).
A cache folder another user could write to (not owned by us, or group/other writable) is not used
at all: one warning line on stderr, and the compile goes on without the cache, as pip does with a
cache folder it does not own (docs/security.md). Files are written to a temporary name and renamed,
so a reader never sees a half-written entry. The directory is ``~/.cache/nnc`` (``$XDG_CACHE_HOME/nnc``
when set); ``NNC_CACHE_DIR`` moves it; ``NNC_CACHE_MAX_MB`` (default 5120, as ccache) bounds its size, oldest
entries going first.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import mmap
import os
import secrets
import stat
import struct
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from nnc.ir import Module, print_module

from .target import TargetInfo

MAGIC = b"NNCX86\x00\x03"  # v3: digest-signed, weights aligned for mmap; older files are "bad magic", rebuilt
_HEADER_LEN = struct.Struct("<I")
SUFFIX = ".nncx"
KEY_FILE = "secret.key"
VERIFIED_FILE = "verified.json"  # the memo of entries verified and unchanged since (CompileCache.get)
VERIFIED_KEEP = 512
KEY_BYTES = 32
_MAC_BYTES = hashlib.sha256().digest_size
WEIGHTS_ALIGN = 64  # the executable's weights alignment (executable.ALIGN)
CHUNK = 1 << 22  # bytes per hashed chunk: hashlib releases the GIL, so chunks hash in parallel
_PARALLEL_MIN = 4 * CHUNK  # below this one thread is as fast as handing chunks to a pool
# options that change what the driver does around compilation, not the code it produces
DRIVER_OPTIONS = frozenset({"cache", "quiet", "cache_dir"})


def cache_root() -> str:
    """nnc's cache folder: ``$NNC_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnc``, else ``~/.cache/nnc``."""
    if os.environ.get("NNC_CACHE_DIR"):
        return os.environ["NNC_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nnc")


def cache_dir() -> str:
    """Where x86 entries live: ``<cache_root()>/x86``."""
    return os.path.join(cache_root(), "x86")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source that decides the generated code: nnc.ir, nnc.passes, this backend."""
    import llvmlite
    import llvmlite.binding as llvm

    import nnc.ir
    import nnc.passes

    h = hashlib.sha256(f"llvmlite {llvmlite.__version__} llvm {llvm.llvm_version_info}".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    roots = [here, os.path.dirname(os.path.abspath(nnc.ir.__file__)),
             os.path.dirname(os.path.abspath(nnc.passes.__file__))]
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as f:
                        h.update(f.read())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)), thread_name_prefix="nnc-hash")


def _chunk_digest(view: memoryview) -> bytes:
    return hashlib.sha256(view).digest()


def content_digest(sections: Iterable[Any]) -> bytes:
    """SHA-256 of the sections' lengths and of the SHA-256 of each ``CHUNK`` of each section (a
    two-level hash: changing any byte changes it, as a plain SHA-256 would); the chunks are hashed
    on a thread pool when there are many."""
    views = [memoryview(s).cast("B") for s in sections]
    chunks = [v[i:i + CHUNK] for v in views for i in range(0, len(v), CHUNK)]
    total = sum(len(v) for v in views)
    digests = list(_pool().map(_chunk_digest, chunks)) if total >= _PARALLEL_MIN else [_chunk_digest(c) for c in chunks]
    h = hashlib.sha256(struct.pack(f"<{len(views)}Q", *(len(v) for v in views)))
    for d in digests:
        h.update(d)
    return h.digest()


def cache_key(module: Module, info: TargetInfo, options: Mapping[str, Any]) -> str:
    """The hex key of compiling ``module`` for ``info`` with ``options``."""
    h = hashlib.sha256()
    h.update(code_fingerprint().encode())
    h.update(b"\0target\0" + info.key().encode())
    opts = {k: v for k, v in options.items() if k not in DRIVER_OPTIONS and k not in ("cpu", "target_features")}
    h.update(b"\0options\0" + json.dumps(opts, sort_keys=True, default=repr).encode())
    h.update(b"\0graph\0" + print_module(module).encode())
    arrays = []
    for name in sorted(module.constants):
        a = np.ascontiguousarray(module.constants[name])
        h.update(f"\0weight\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        arrays.append(a.reshape(-1).view(np.uint8))
    h.update(b"\0weights\0" + content_digest(arrays))  # every byte of every weight, in name order
    return h.hexdigest()


@dataclass
class Entry:
    """What a hit gives back: the object code, the weights blob and the executable's metadata."""

    object_code: bytes
    weights: bytes | memoryview  # a fresh compile's entry views the weights blob instead of copying it
    meta: dict[str, Any]


class CorruptEntry(Exception):
    """An entry that must not be loaded (the message says why)."""


def _signature(secret: bytes, key: str, header: bytes) -> bytes:
    """The HMAC of the magic, the key and the header; the header holds the sections' digest."""
    mac = hmac.new(secret, MAGIC, hashlib.sha256)
    for part in (key.encode(), header):  # length-prefixed: no two (key, header) pairs sign alike
        mac.update(struct.pack("<Q", len(part)) + part)
    return mac.digest()


def encode_parts(key: str, entry: Entry, secret: bytes) -> list[Any]:
    """The entry file as a list of buffers (the weights are not copied into one bytes object)."""
    meta = json.dumps(entry.meta, sort_keys=True).encode()
    obj, weights = entry.object_code, memoryview(entry.weights).cast("B")

    def header_for(pad: int) -> bytes:
        sections = [obj, meta, bytes(pad), weights]
        return json.dumps({"key": key, "sizes": [len(s) for s in sections],
                           "sha256": content_digest(sections).hex()}).encode()

    # the padding's length changes the header's, which moves the weights: settle it
    pad = 0
    for _ in range(4):
        start = len(MAGIC) + _HEADER_LEN.size + len(header_for(pad)) + _MAC_BYTES + len(obj) + len(meta)
        want = -start % WEIGHTS_ALIGN
        if want == pad:
            break
        pad = want
    header = header_for(pad)
    return [MAGIC, _HEADER_LEN.pack(len(header)), header, _signature(secret, key, header), obj, meta, bytes(pad),
            weights]


def encode(key: str, entry: Entry, secret: bytes) -> bytes:
    return b"".join(bytes(p) if isinstance(p, memoryview) else p for p in encode_parts(key, entry, secret))


def decode(key: str, data: bytes | mmap.mmap, secret: bytes, check_content: bool = True) -> Entry:
    """Parse and verify an entry; raises ``CorruptEntry`` for anything but a whole, intact entry
    signed with ``secret``. The weights are a view of ``data`` (a mapped file: not copied).
    ``check_content=False`` skips re-hashing the sections (the signature over the header, which
    holds their digest, is still checked): for a file verified before and unchanged since
    (``CompileCache``'s memo of verified files)."""
    if data[:len(MAGIC)] != MAGIC:
        raise CorruptEntry("bad magic")
    pos = len(MAGIC)
    if len(data) < pos + _HEADER_LEN.size:
        raise CorruptEntry("truncated header")
    (n,) = _HEADER_LEN.unpack_from(data, pos)
    pos += _HEADER_LEN.size
    header_bytes = data[pos:pos + n]
    try:
        header = json.loads(header_bytes)
        sizes = [int(s) for s in header["sizes"]]
        want_key, want_sum = str(header["key"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptEntry(f"unreadable header ({e})") from None
    pos += n
    if want_key != key:
        raise CorruptEntry("entry for another key")
    mac = data[pos:pos + _MAC_BYTES]
    pos += _MAC_BYTES
    if len(sizes) != 4 or any(s < 0 for s in sizes) or pos + sum(sizes) != len(data):
        raise CorruptEntry(f"size mismatch ({len(data)} bytes, header says {pos + sum(max(s, 0) for s in sizes)})")
    view = memoryview(data)
    sections = []
    for s in sizes:
        sections.append(view[pos:pos + s])
        pos += s
    # the signature covers the header, the header the digest of every byte: both must hold (an
    # accident, a flipped bit, is told apart from a forgery; compare_digest: no timing oracle)
    signed = hmac.compare_digest(mac, _signature(secret, key, bytes(header_bytes)))
    if check_content and not hmac.compare_digest(content_digest(sections).hex().encode(), want_sum.encode()):
        raise CorruptEntry("checksum mismatch")
    if not signed:
        raise CorruptEntry("bad signature")
    try:
        meta = json.loads(bytes(sections[1]))
    except ValueError as e:
        raise CorruptEntry(f"unreadable metadata ({e})") from None
    return Entry(bytes(sections[0]), sections[3], meta)  # the weights stay a view of the file's bytes


def _map(path: str) -> tuple[mmap.mmap, int]:
    """The entry file mapped read-only, and its open descriptor (the caller closes it). Refused
    (``ValueError``) unless it is a regular file of ours that only we can write and that has no
    other name: then nobody else can change the bytes once they are verified (our own writers
    replace entries by renaming, never in place)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022 or st.st_nlink != 1:
            raise ValueError(f"entry file not private (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}, "
                             f"{st.st_nlink} links)")
        if st.st_size == 0:
            raise ValueError("empty file")
        data = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                         prot=mmap.PROT_READ)
    except BaseException:
        os.close(fd)
        raise
    return data, fd


def _identity(st: os.stat_result) -> list[int]:
    """What changes whenever a file's bytes do: the inode, its size, and its modification and
    status-change times (the ctime moves on every write and cannot be set back by its owner), as
    git's index trusts them to skip re-hashing unchanged files."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class UntrustedFolder(Exception):
    """A cache folder (or its key) that someone other than this user could have written."""


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"nnc: warning: {message}", file=sys.stderr)


def _check_owned(st: os.stat_result, path: str, what: str) -> None:
    if st.st_uid != os.getuid():
        raise UntrustedFolder(f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})")
    if st.st_mode & 0o022:
        raise UntrustedFolder(f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                              f"fix with: chmod go-w {path}")


def _make_private_dirs(path: str) -> list[str]:
    """Create ``path`` and its missing parents with mode 0700 (``os.makedirs`` would give the
    parents the umask's mode, often 0755 or 0775); returns the folders it created."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass  # another process made it: checked below like any folder
    return missing


def _read_or_create_key(directory: str) -> bytes:
    """The per-user secret in ``directory``: created 0600 with O_EXCL under a temporary name, then
    linked into place (atomic: two processes racing agree on one key, a reader never sees half)."""
    path = os.path.join(directory, KEY_FILE)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    if os.path.islink(path):  # O_NOFOLLOW would refuse it too, but with a less helpful message
        raise UntrustedFolder(f"cache key {path} is a symbolic link")
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        tmp = os.path.join(directory, f".{KEY_FILE}.{secrets.token_hex(8)}.tmp")
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(wfd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            os.unlink(tmp)
        fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # of the file we read, not of whatever the name points to later
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFolder(f"cache key {path} is not a regular file")
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise UntrustedFolder(f"cache key {path} must be yours and private (mode 0600), "
                                  f"not uid {st.st_uid} mode {stat.S_IMODE(st.st_mode):04o}")
        secret = f.read(KEY_BYTES + 1)
    if len(secret) != KEY_BYTES:
        raise UntrustedFolder(f"cache key {path} is not {KEY_BYTES} bytes (delete it to make a new one)")
    return secret


class CompileCache:
    """Entries in one directory. Every failure to read or write is a miss, never an error; an
    untrusted folder turns the cache off for this compile (status "off", one warning on stderr)."""

    def __init__(self, directory: str | None = None, max_bytes: int | None = None,
                 signer: CompileCache | None = None):
        self.dir = directory or cache_dir()
        self._signer = signer  # a cache whose folder and key this one uses too (the kernel cache's parent)
        # the folders that must be ours: the entries' folder, nnc's cache root when it is the
        # default one, and any parent nnc creates (an existing parent of an explicit folder is the
        # user's choice, like /tmp)
        self._owned = [os.path.abspath(self.dir)] + ([] if directory else [os.path.abspath(cache_root())])
        if max_bytes is None:
            try:
                max_bytes = int(float(os.environ.get("NNC_CACHE_MAX_MB", "5120")) * 2**20)
            except ValueError:
                max_bytes = 5120 * 2**20
        self.max_bytes = max_bytes
        self._secret: bytes | None = None
        self.untrusted = False  # set (and warned about) when the folder is refused

    def path(self, key: str) -> str:
        return os.path.join(self.dir, key + SUFFIX)

    def _trusted_secret(self, create: bool) -> bytes | None:
        """The signing key once the folder is known to be ours; None when the cache must not be
        used (untrusted: warned) or, with ``create=False``, when there is no folder yet."""
        if self._secret is not None:
            return self._secret
        shared = self._signer._trusted_secret(create) if self._signer is not None else None
        if self._signer is not None and shared is None:
            return None
        try:
            if create:
                self._owned += _make_private_dirs(self.dir)
            elif not os.path.isdir(self.dir):
                return None
            for d in dict.fromkeys(self._owned):
                _check_owned(os.stat(d), d, "cache folder")
            self._secret = shared if shared is not None else _read_or_create_key(self.dir)
        except UntrustedFolder as e:
            self.untrusted = True
            _warn_once(f"{e}; the compilation cache is disabled")
            return None
        except OSError:
            return None  # unreadable or full: a miss, as any other I/O failure
        return self._secret

    def get(self, key: str) -> tuple[Entry | None, str]:
        """(entry, status): status is "hit", "miss", "corrupt: <why>" (the file was deleted) or
        "off" (the folder is not trusted)."""
        path = self.path(key)
        if not os.path.isdir(self.dir):
            return None, "miss"
        secret = self._trusted_secret(create=False)
        if secret is None:
            return None, "off" if self.untrusted else "miss"
        try:
            data, fd = _map(path)
        except FileNotFoundError:
            return None, "miss"
        except (OSError, ValueError) as e:  # unreadable, empty (mmap refuses), or not safely ours
            self._discard(path)
            return None, f"corrupt: {e}"
        try:
            memo = self._verified(secret)
            unchanged = memo.get(key) == _identity(os.fstat(fd))
            try:
                entry = decode(key, data, secret, check_content=not unchanged)
            except CorruptEntry as e:
                self._discard(path)
                return None, f"corrupt: {e}"
            try:
                os.utime(fd)  # recently used entries survive pruning
            except OSError:
                pass
            # the file just verified (or found unchanged), as it is after our own touch: the next
            # hit need not hash its bytes again unless they change
            memo[key] = _identity(os.fstat(fd))
            self._save_verified(secret, memo)
        finally:
            os.close(fd)
        return entry, "hit"

    # -- the memo of verified entries: {key: identity}, signed like the entries ----------------------
    def _memo_path(self) -> str:
        return os.path.join(self.dir, VERIFIED_FILE)

    def _verified(self, secret: bytes) -> dict[str, list[int]]:
        try:
            fd = os.open(self._memo_path(), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return {}
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
                return {}
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read(1 << 20)
        except OSError:
            return {}
        finally:
            os.close(fd)
        mac, _, body = raw.partition(b"\n")
        want = hmac.new(secret, b"nnc verified entries\0" + body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(mac, want):
            return {}  # not ours, or torn: verify everything again
        try:
            memo = json.loads(body)
            return {str(k): [int(x) for x in v] for k, v in memo.items()}
        except (ValueError, TypeError, AttributeError):
            return {}

    def _save_verified(self, secret: bytes, memo: dict[str, list[int]]) -> None:
        if len(memo) > VERIFIED_KEEP:  # the most recent ones (dicts keep insertion order)
            memo = dict(list(memo.items())[-VERIFIED_KEEP:])
        body = json.dumps(memo).encode()
        mac = hmac.new(secret, b"nnc verified entries\0" + body, hashlib.sha256).hexdigest().encode()
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".verified.", suffix=".tmp", dir=self.dir)
            with os.fdopen(fd, "wb") as f:
                f.write(mac + b"\n" + body)
            os.replace(tmp, self._memo_path())
            tmp = None
        except OSError:
            pass  # the memo only saves time
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def put(self, key: str, entry: Entry) -> bool:
        secret = self._trusted_secret(create=True)
        if secret is None:
            return False
        parts = encode_parts(key, entry, secret)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.dir)
            with os.fdopen(fd, "wb") as f:
                for part in parts:
                    f.write(part)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError:
            return False
        finally:
            if tmp is not None:
                self._discard(tmp)
        self.prune()
        return True

    def prune(self) -> None:
        """Delete the least recently used entries while the directory holds more than ``max_bytes``."""
        try:
            entries = []
            with os.scandir(self.dir) as it:
                for e in it:
                    if e.name.endswith(SUFFIX):
                        st = e.stat()
                        entries.append((st.st_mtime, st.st_size, e.path))
        except OSError:
            return
        total = sum(s for _, s, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            self._discard(path)
            total -= size

    def discard(self, key: str) -> None:
        """Delete ``key``'s entry (one that verified but whose metadata the backend cannot use)."""
        self._discard(self.path(key))

    @staticmethod
    def _discard(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
