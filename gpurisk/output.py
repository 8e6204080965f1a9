"""Result directories written atomically and read back verified.

Every directory gpurisk writes (revaluation results, stress results, books, sharded books)
goes through :func:`atomic_dir`:

1. an exclusive lock (``fcntl.flock``, non-blocking) on ``.<name>.gpurisk-lock`` beside the
   target: a second writer of the same place gets :class:`OutputError` at once;
2. every file is written into ``.<name>.tmp-<run>`` beside the target (same filesystem) and
   fsynced;
3. ``manifest.json`` is written **last**: format version, kind, per file its row count, size
   and sha256, the input book's hash where known, marks, venue, backend, gpurisk version, a
   run id and the time; then the temporary directory is fsynced;
4. the swap: on Linux, the new directory and the previous result (if any) trade places in one
   atomic step (``renameat2`` with ``RENAME_EXCHANGE``), the parent is fsynced and the previous
   result deleted. Where the system or filesystem cannot exchange, the previous result is
   renamed aside to ``.<name>.old-<run>``, the new one renamed in, the parent fsynced, the old
   one deleted.

A kill at any point leaves the previous complete result or the new complete one at the
target, never a mix. With the exchange there is no moment without one. With the two renames,
the one window with nothing at the target is between them; the previous result is then whole
in its ``.old-`` folder: the next writer restores it (or finishes the swap) before anything
else, and a reader says where it is.

:func:`read_manifest` verifies a directory against its manifest (every file present, same
size, same sha256) and refuses it otherwise, saying what is wrong.

:func:`check_place` refuses an output place before any compute: the input book itself or a
folder inside it (or one holding it), an existing file or a path under one, a parent that
cannot be written, a non-empty directory that is not a gpurisk result of the same kind, and a
place another gpurisk run is writing.

Test hook (tests only, never set it in production): ``GPURISK_TEST_OUTPUT_FAULT=STEP:ACTION``
makes the writer act when it reaches step number STEP (0 = before the first file, one step
after each file, then ``manifest``, ``aside`` and ``swap``; naming ``aside``, a step of the
two-rename swap only, makes the writer take that swap); ACTION is ``kill`` (SIGKILL
itself), ``int`` (SIGINT itself) or ``sleep=SECONDS``. ``STEP`` may be ``*`` (every step).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = "gpurisk-output"
FORMAT_VERSION = 1
KINDS = ("revalue", "stress", "book", "shard")
LEGACY_SHARDED = "gpurisk-sharded-book"  # sharded-book manifests before format 1 (row counts only)
FAULT_ENV = "GPURISK_TEST_OUTPUT_FAULT"
_CHUNK = 1 << 20


class OutputError(ValueError):
    """An output place is refused, is being written by another run, or could not be written;
    or a result directory is incomplete or does not match its manifest. The message names the
    path and what to do. (A ValueError, like BookError: the CLI reports it in one line, exit 2.)"""


class ManifestError(OutputError):
    """A result directory without a valid manifest, or whose files do not match it."""


# ------------------------------------------------------------------ helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not fsync directories
        pass
    finally:
        os.close(fd)


def _aside(target: Path, what: str) -> str:
    return f".{target.name}.{what}-"


def _siblings(target: Path, what: str) -> list[Path]:
    parent = target.parent
    if not parent.is_dir():
        return []
    prefix = _aside(target, what)
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefix))


def _fault(step) -> None:
    """The test hook (see the module doc); does nothing unless GPURISK_TEST_OUTPUT_FAULT is set."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, _, action = spec.partition(":")
    if where != "*" and where != str(step):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here
    elif action.startswith("sleep="):
        time.sleep(float(action.split("=", 1)[1]))


def book_hash(book) -> str | None:
    """A sha256 over a Book's arrays and symbols (cached in ``book.meta``), or None."""
    meta = getattr(book, "meta", None)
    if meta is None:
        return None
    if "hash" not in meta:
        import numpy as np

        h = hashlib.sha256()
        h.update("\0".join(book.symbols).encode())
        for name in ("mark_price", "contract_size", "tier_start", "tier_floor", "tier_mmr", "tier_cum",
                     "tier_max_leverage", "account_id", "wallet", "pos_start", "pos_account", "pos_symbol",
                     "size", "entry", "isolated", "isolated_margin", "leverage"):
            h.update(np.ascontiguousarray(getattr(book, name)).tobytes())
        if not book.default_assets:  # contract types and pools (a default book hashes as before)
            h.update("\0".join(book.assets).encode())
            for name in ("inverse", "settle_asset", "account_asset"):
                h.update(np.ascontiguousarray(getattr(book, name)).tobytes())
        if getattr(book, "margin_model", None) is not None:  # books without the column hash as before
            h.update(b"margin_model" + np.ascontiguousarray(book.margin_model).tobytes())
        if getattr(book, "collateral", None) is not None:  # a pooled venue's collateral table
            h.update(b"collateral\0" + book.collateral.write_csv().encode())
        meta["hash"] = h.hexdigest()
    return meta["hash"]


# ------------------------------------------------------------------ the lock

_HELD: dict[str, list] = {}  # lock path -> [fd, depth]: locks this process holds (re-entrant)
_HELD_GUARD = threading.Lock()


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.gpurisk-lock"


@contextlib.contextmanager
def locked(target: str | Path):
    """Hold the exclusive write lock of ``target`` (re-entrant within this process); raise
    OutputError at once when another run holds it."""
    target = Path(os.path.abspath(target))
    path = _lock_path(target)
    key = str(path)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            fresh = False
        else:
            fresh = True
    if fresh:
        fd = _acquire(path, target)
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
    try:
        yield path
    finally:
        with _HELD_GUARD:
            entry = _HELD[key]
            entry[1] -= 1
            done = entry[1] == 0
            if done:
                del _HELD[key]
        if done:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still locked: a waiter re-checks the inode
            os.close(entry[0])


def _acquire(path: Path, target: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{target}: another gpurisk run is writing it (lock {path} is held); "
                                  f"wait for it to finish or choose another output") from None
            raise
        try:  # the holder before us may have unlinked the file we locked: lock the current one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


# ------------------------------------------------------------------ output places


def _resolve(p: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _check_writable_below(place: Path, name: str) -> None:
    """The nearest existing directory at or above ``place`` can take new entries (OutputError
    naming ``name`` if it is a file or not writable)."""
    probe = place
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{name} lies under {probe}, which is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{name}: cannot write in {probe} (permission denied)")


def check_place(target: str | Path, kind: str | None = None, inputs=(), what: str = "output") -> Path:
    """Refuse an output place before any compute (OutputError, one line each):

    - the place is an input (``inputs``: book directories or files), inside one, or holds one;
    - it is an existing file, or lies under a file;
    - its nearest existing parent cannot be written;
    - it is a non-empty directory that is not a gpurisk result of this ``kind`` (it would be
      replaced as a whole);
    - another gpurisk run is writing it.
    """
    target = Path(target)
    real = _resolve(target)
    for src in inputs:
        if src is None or not isinstance(src, (str, Path)):
            continue
        s = _resolve(src)
        if _inside(real, s):
            rel = "is" if real == s else "is inside"
            raise OutputError(f"{what} {target} {rel} the input {src}: writing there would overwrite the input; "
                              f"choose another directory")
        if _inside(s, real):
            raise OutputError(f"{what} {target} holds the input {src}: replacing it would delete the input; "
                              f"choose another directory")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{what} {target} is an existing file, not a directory; remove it or choose another path")
    _check_writable_below(real, f"{what} {target}")
    if real.is_dir() and any(real.iterdir()):
        m = _peek_manifest(real)
        if m is None:
            raise OutputError(f"{what} {target} is a non-empty directory that is not a gpurisk result; it would be "
                              f"replaced as a whole: remove it or choose another directory")
        if kind is not None and m.get("kind") != kind:
            raise OutputError(f"{what} {target} holds a gpurisk {m.get('kind')} result, not {kind}; "
                              f"remove it or choose another directory")
    if real.parent.is_dir():
        with locked(real):  # a second writer is refused here, before any compute
            pass
    return target


@contextlib.contextmanager
def reserved(target: str | Path | None, kind: str | None = None, inputs=(), what: str = "--out"):
    """check_place, then hold the lock of ``target`` until the block ends (the CLI wraps its
    whole command so a second run is refused before computing). ``None``: nothing to do."""
    if target is None:
        yield None
        return
    check_place(target, kind, inputs, what)
    real = _resolve(target)
    real.parent.mkdir(parents=True, exist_ok=True)
    with locked(real):
        yield target


def _peek_manifest(directory: Path) -> dict | None:
    try:
        m = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    if m.get("format") == LEGACY_SHARDED:
        return dict(m, kind="shard")
    return m if m.get("format") == FORMAT else None


# ------------------------------------------------------------------ writing


class Writer:
    """The temporary directory of one atomic write: write files into ``path`` (with
    ``write_parquet`` / ``write_csv`` / ``write_bytes``, or yourself, then ``add``)."""

    def __init__(self, path: Path, target: Path):
        self.path = path
        self.target = target
        self.files: dict[str, dict] = {}
        self.meta: dict = {}
        self._step = 1

    def _file(self, name: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _wrap(self, name: str, fn):
        try:
            fn(self._file(name))
        except OutputError:
            raise
        except Exception as exc:  # a full disk, a size limit, an I/O error
            raise OutputError(f"cannot write {self.target / name}: {exc}; nothing was written at {self.target} "
                              f"(an earlier result there is untouched)") from exc

    def write_parquet(self, name: str, df) -> None:
        self._wrap(name, df.write_parquet)
        self.add(name, df.height)

    def write_csv(self, name: str, df) -> None:
        self._wrap(name, df.write_csv)
        self.add(name, df.height)

    def write_frame(self, name: str, df, format: str) -> None:
        (self.write_parquet if format == "parquet" else self.write_csv)(name, df)

    def write_bytes(self, name: str, data: bytes, rows: int | None = None) -> None:
        self._wrap(name, lambda p: p.write_bytes(data))
        self.add(name, rows)

    def add(self, name: str, rows: int | None, sha256: str | None = None, size: int | None = None) -> None:
        """Record a file written into ``path`` (fsynced and hashed here unless given)."""
        p = self.path / name
        try:
            if sha256 is None:
                _fsync_file(p)
                sha256 = sha256_file(p)
            size = p.stat().st_size if size is None else size
        except OSError as exc:
            raise OutputError(f"cannot write {self.target / name}: {exc}") from exc
        self.files[name] = {"rows": None if rows is None else int(rows), "bytes": int(size), "sha256": sha256}
        _fault(self._step)
        self._step += 1


def _recover(target: Path) -> None:
    """Under the lock: finish or undo a swap a killed writer left, and clear its leftovers."""
    old = _siblings(target, "old")
    if not target.exists():
        complete = [p for p in old if _peek_manifest(p) is not None]
        if complete:
            os.rename(complete[-1], target)  # the previous result goes back in place
            old = [p for p in old if p != complete[-1]]
    for p in old + _siblings(target, "tmp"):
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path, kind: str, meta: dict | None = None, inputs=()):
    """Write a result directory atomically (see the module doc).

    >>> with atomic_dir("out/", "revalue", {"venue": "binance"}) as w:
    ...     w.write_parquet("accounts.parquet", accounts)

    The manifest is written when the block ends without an exception; on an exception the
    temporary directory is removed and the target is left as it was.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    target = Path(target)
    check_place(target, kind, inputs, what="output") if not _held(target) else None
    real = _resolve(target)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output {target}: cannot create {real.parent}: {exc}") from exc
    with locked(real):
        _recover(real)
        run = uuid.uuid4().hex[:12]
        tmp = real.parent / (_aside(real, "tmp") + run)
        try:
            tmp.mkdir()
        except OSError as exc:
            raise OutputError(f"output {target}: cannot create {tmp}: {exc}") from exc
        w = Writer(tmp, target)
        try:
            _fault(0)
            yield w
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                        "files": w.files}
            manifest.update(meta or {})
            manifest.update(w.meta)
            manifest.setdefault("book_hash", None)
            from . import __version__

            manifest.update({"gpurisk_version": __version__, "run_id": run,
                             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
            text = json.dumps(manifest, indent=1, default=_jsonable)
            w._wrap(MANIFEST, lambda p: _write_synced(p, text.encode()))
            _fsync_dir(tmp)
            _fault("manifest")
            _swap(tmp, real, run)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _held(target: Path) -> bool:
    return str(_lock_path(_resolve(target))) in _HELD


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``):
    True when done, False where the system or the filesystem cannot."""
    if os.environ.get(FAULT_ENV, "").partition(":")[0] == "aside":
        return False  # the test hook names a step of the two-rename swap: take that one
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(tmp: Path, target: Path, run: str) -> None:
    old = None
    if target.exists():
        try:
            exchanged = _exchange(tmp, target)
        except OSError as exc:
            raise OutputError(f"cannot move the new result into {target}: {exc}; the earlier result is kept") from exc
        if exchanged:  # the new result is in place; the previous one is where the new one was
            _fsync_dir(target.parent)
            _fault("swap")
            shutil.rmtree(tmp, ignore_errors=True)
            return
    try:
        if target.exists():
            old = target.parent / (_aside(target, "old") + run)
            os.rename(target, old)
            _fault("aside")
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        if old is not None and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(old, target)
        raise OutputError(f"cannot move the new result into {target}: {exc}; the earlier result is kept") from exc
    _fault("swap")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_file_place(path: str | Path, inputs=()) -> Path:
    """Refuse a place for one output file (OutputError): a directory, a path under a file, a
    parent that cannot be written, or a file of an input result directory (``inputs``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name (e.g. {path / 'report.html'})")
    real = _resolve(path)
    _check_writable_below(real.parent, str(path))
    for src in inputs:
        if src is None:
            continue
        s = _resolve(src)
        if real.parent == s:
            m = _peek_manifest(s) or {}
            if real.name == MANIFEST or real.name in m.get("files", {}):
                raise OutputError(f"{path} is a file of the input {src}: writing there would overwrite it; "
                                  f"choose another file")
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Write one file atomically: yields a temporary path beside ``path``; on success it is
    fsynced and renamed over ``path`` (os.replace), else removed."""
    path = Path(path)
    check_file_place(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc}") from exc
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"cannot write {path}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# ------------------------------------------------------------------ reading


_INTERRUPTED = "the run that wrote it was probably interrupted (or the files were changed afterwards)"


def read_manifest(directory: str | Path, kind: str | tuple | None = None, only: str | tuple | None = None,
                  verify: bool = True) -> dict:
    """The manifest of a result directory, after checking every file it lists is there with
    the same size and sha256 (``only``: just the files whose names start with it, a prefix or a
    tuple of prefixes). Raises
    ManifestError saying what is wrong. A legacy sharded-book manifest (row counts only, no
    checksums) is returned as it is, with ``kind`` "shard"."""
    d = Path(directory)
    if not d.is_dir():
        raise ManifestError(_missing_message(d))
    path = d / MANIFEST
    if not path.exists():
        raise ManifestError(f"{d} is not a complete gpurisk result: {MANIFEST} is missing; {_INTERRUPTED}. "
                            f"Rerun the command that writes it")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read ({exc}); {_INTERRUPTED}") from None
    if not isinstance(m, dict) or m.get("format") not in (FORMAT, LEGACY_SHARDED):
        raise ManifestError(f"{path} is not a gpurisk manifest")
    if m["format"] == LEGACY_SHARDED:
        m = dict(m, kind="shard")
    elif m.get("format_version", 0) > FORMAT_VERSION:
        raise ManifestError(f"{path} has format version {m.get('format_version')}; this gpurisk reads up to "
                            f"{FORMAT_VERSION}: upgrade gpurisk")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and m.get("kind") not in kinds:
        raise ManifestError(f"{d} holds a gpurisk {m.get('kind')} result, not {' or '.join(kinds)}")
    if verify and m["format"] == FORMAT:
        problems = verify_files(d, m, only)
        if problems:
            raise ManifestError(f"{d} does not match its {MANIFEST}: {'; '.join(problems[:5])}"
                                f"{f' (and {len(problems) - 5} more)' if len(problems) > 5 else ''}; "
                                f"{_INTERRUPTED}. Rerun the command that writes it"
                                + (f", or, if you edited the book on purpose, delete {path}" if m.get("kind") == "book"
                                   else ""))
    return m


def verify_files(directory: Path, manifest: dict, only: str | tuple | None = None) -> list[str]:
    problems = []
    for name, entry in manifest.get("files", {}).items():
        if only is not None and not name.startswith(only):
            continue
        p = directory / name
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc})")
            continue
        if size != entry.get("bytes"):
            problems.append(f"{name} has {size} bytes, the manifest says {entry.get('bytes')}")
            continue
        try:
            digest = sha256_file(p)
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc})")
            continue
        if digest != entry.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def _missing_message(d: Path) -> str:
    old = [p for p in _siblings(_resolve(d), "old") if _peek_manifest(p) is not None]
    if old:
        return (f"{d} does not exist: a gpurisk run replacing it was interrupted; the previous complete result "
                f"is in {old[-1]} (the next write to {d} restores it, or rename it back yourself)")
    return f"{d} does not exist"


def manifest_or_none(directory: str | Path, **kw) -> dict | None:
    """read_manifest when the directory has a gpurisk manifest, None when it has none (a user's
    own directory); a manifest that cannot be parsed or does not match still raises."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        m = {"format": FORMAT}  # unreadable: let read_manifest say so
    if not isinstance(m, dict) or m.get("format") not in (FORMAT, LEGACY_SHARDED):
        return None  # someone else's manifest.json
    return read_manifest(d, **kw)
