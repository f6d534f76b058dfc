"""A CSV too large for memory, converted once into memory-mapped .npy files and reused while it is unchanged.

The conversion reads the CSV a chunk of rows at a time (pandas' chunksize), checks each chunk as the
in-memory path checks the whole file (dlrun.data.csv_checks: the same messages and label encoding),
and appends its float32 features to x.npy; the targets, small, stay in memory until they go to y.npy;
meta.json holds the task and the class and feature names.

Where: `FILE.dlrun-cache/KEY/` beside the CSV when that folder can be written, else
`$XDG_CACHE_HOME/dlrun/` (`~/.cache/dlrun/`), in a folder named after the CSV and a hash of its
absolute path. KEY hashes the CSV's size, mtime_ns, inode and ctime_ns and the options that change the
arrays (target, task, delimiter): an edited file, or other options, convert again, and the entries of
the CSV's older versions are removed then. The ctime is what no tool sets: a file edited or replaced
with its old mtime kept (`cp -p`, `rsync -a`, `tar x`) gets a new one (so does a chmod: converted
again, which costs time only). A conversion is written into a temporary folder and renamed into
place whole, so one that was killed never leaves an entry that looks valid; the folder's name holds
its host and process, so that only this host's dead conversions are removed (a cache on a shared
filesystem is written from other hosts too), and other hosts' after a day.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from dlrun.data.csv_checks import (check_column, check_features, check_is_file, check_numeric, encode_target,
                                   float32_features, no_rows_error, non_finite_error, read_error)
from dlrun.data.lazy import MemmapFeatures
from dlrun.data.raw import RawData
from dlrun.errors import DataError

FORMAT = 1  # bumped when an entry's layout changes, so that older entries are converted again
CHUNK_BYTES = 64 << 20  # pandas' size of one chunk of rows (float64 values)
NPY_HEADER_BYTES = 128  # room for x.npy's header, written once the row count is known
KEY_LENGTH = 16
TEMPORARY = ".tmp-"
FOREIGN_TEMPORARY_S = 24 * 3600  # another host's temporary folder (or an unnamed one) is dead after this long


def cached_csv(file: Path, path: str, target: str, task: str, delimiter: str) -> RawData:
    """The CSV's RawData with its features memory-mapped from the cache; converted first when needed.

    Args:
        file: the CSV. path: the same as the user gave it, for messages.
        target, task, delimiter: the source's options, as for the in-memory path.
    """
    check_is_file(file)
    before = file.stat()
    key = entry_key(before, target, task, delimiter)
    folders = cache_folders(file)
    for folder in folders:
        raw = read_entry(folder / key, path)
        if raw is not None:
            return raw
    entry = _convert(file, path, target, task, delimiter, folders, key)
    after = file.stat()
    if _version(after) != _version(before):
        shutil.rmtree(entry, ignore_errors=True)
        raise DataError(f"data.path: '{path}' changed while dlrun converted it; run again once it is written.")
    _remove_stale(entry.parent, key, after)
    raw = read_entry(entry, path)
    if raw is None:  # the entry was just written and checked: only a concurrent deletion gets here
        raise DataError(f"the cache of '{path}' at {entry} vanished as it was written; run again.")
    return raw


def entry_key(stat: os.stat_result, target: str, task: str, delimiter: str) -> str:
    """What identifies one conversion of one CSV: its version (size, mtime, inode, ctime) and the options that
    shape the arrays."""
    identity = json.dumps([FORMAT, *_version(stat), target, task, delimiter])
    return hashlib.sha256(identity.encode()).hexdigest()[:KEY_LENGTH]


def _version(stat: os.stat_result) -> list[int]:
    """What tells one version of the file from another without reading it: the mtime alone can be restored
    (cp -p, rsync -a, tar x), the ctime cannot, and a file replaced whole has another inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def temporary_prefix(key: str, pid: int | None = None) -> str:
    """The start of the name of a conversion's temporary folder: the key, this host and the process."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{TEMPORARY}{key}-h{host}-{os.getpid() if pid is None else pid}-"


def cache_folders(file: Path) -> list[Path]:
    """Where the CSV's cache may live, in the order tried: beside it, then under $XDG_CACHE_HOME/dlrun."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlrun"
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:KEY_LENGTH]
    return [file.with_name(file.name + ".dlrun-cache"), home / f"{file.name}-{digest}.dlrun-cache"]


def read_entry(entry: Path, path: str) -> RawData | None:
    """The RawData of a complete cache entry, or None when there is none (or it does not hold together)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            return None
        x = np.load(entry / "x.npy", mmap_mode="r", allow_pickle=False)
        y = np.load(entry / "y.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError):
        return None
    if x.shape != (meta["rows"], len(meta["feature_names"])) or len(y) != meta["rows"]:
        return None
    features = MemmapFeatures(path, x, offset_path=str((entry / "x.npy").resolve()))
    return RawData(features, y, meta["task"], (int(x.shape[1]),), meta["class_names"], meta["feature_names"])


def _convert(file: Path, path: str, target: str, task: str, delimiter: str, folders: list[Path], key: str) -> Path:
    """Write the entry into a temporary folder of the first writable cache folder, then rename it into place."""
    folder, temporary = _temporary_folder(file, folders, key)
    entry = folder / key
    try:
        meta, y = _write_features(file, path, target, task, delimiter, temporary / "x.npy")
        np.save(temporary / "y.npy", y)
        (temporary / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(temporary, entry)
        except OSError:  # an entry is there: another process's (complete), or an unreadable one
            if read_entry(entry, path) is None:
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(temporary, entry)
        return entry
    except OSError as error:  # the CSV's own read errors are DataErrors by now: this is the cache's folder
        raise DataError(f"cannot write the cache that streams '{path}' in {folder}: {error.strerror or error}. Free "
                        "space there, set XDG_CACHE_HOME to another folder, or read the file into memory: "
                        "data.in_memory=true.") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            folder.rmdir()  # only when empty: a failed first conversion leaves no folder behind
        except OSError:
            pass


def _temporary_folder(file: Path, folders: list[Path], key: str) -> tuple[Path, Path]:
    tried = []
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder, Path(tempfile.mkdtemp(prefix=temporary_prefix(key), dir=folder))
        except OSError as error:
            tried.append(f"{folder} ({error.strerror or error})")
    raise DataError(f"cannot write the cache that streams '{file}': {'; '.join(tried)}. Set XDG_CACHE_HOME to a "
                    "writable folder, or read the file into memory: data.in_memory=true.")


def _write_features(file: Path, path: str, target: str, task: str, delimiter: str, x_file: Path):
    """Convert the CSV chunk by chunk: float32 features into x_file (a .npy), checked as the in-memory path
    checks them; the targets encoded once all are read. The entry's meta and the targets."""
    import pandas as pd

    reading = (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError)
    stat = file.stat()
    try:
        header = pd.read_csv(file, sep=delimiter, nrows=0)
    except reading as error:
        raise read_error(file, error) from None
    check_column(header, target, path, "data.target")
    names = [str(c) for c in check_features(header, target, path).columns]
    rows, all_finite, targets = 0, np.ones(len(names), dtype=bool), []
    chunks = pd.read_csv(file, sep=delimiter, chunksize=max(1, CHUNK_BYTES // (8 * len(header.columns))))
    with x_file.open("wb") as out:
        out.write(b"\0" * NPY_HEADER_BYTES)
        while True:
            try:  # only the reading: an error writing the cache is not the CSV's
                chunk = next(chunks, None)
            except reading as error:
                raise read_error(file, error) from None
            if chunk is None:
                break
            if chunk.empty:  # a header without rows comes as one empty chunk
                continue
            features = chunk.drop(columns=[target])
            check_numeric(features, path)
            x, finite = float32_features(features)
            all_finite &= finite
            out.write(x.tobytes())  # row-major, whatever order pandas handed out
            rows += len(x)
            targets.append(chunk[target])
        if rows == 0:
            raise no_rows_error(file)
        if not all_finite.all():
            raise non_finite_error(path, [name for name, ok in zip(names, all_finite) if not ok])
        y, task, class_names = encode_target(_target_column(file, target, delimiter, targets), path, target, task)
        out.seek(0)
        out.write(npy_header((rows, len(names))))
    meta = {"format": FORMAT, "rows": rows, "task": task, "class_names": class_names, "feature_names": names,
            "csv": str(file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "version": _version(stat), "options": {"target": target, "delimiter": delimiter}}
    return meta, y


def _target_column(file: Path, target: str, delimiter: str, chunks: list):
    """The whole target column as pandas reads it from the whole file: the chunks joined when pandas read
    them all as one dtype; else (numbers in one chunk, text in another) the column read again alone,
    so that its values and so its labels are what the in-memory path sees."""
    import pandas as pd

    if len({str(chunk.dtype) for chunk in chunks}) == 1:
        return pd.concat(chunks, ignore_index=True)
    return pd.read_csv(file, sep=delimiter, usecols=[target])[target]


def npy_header(shape: tuple[int, int]) -> bytes:
    """A .npy (version 1.0) header for C-ordered float32 of `shape`, padded to NPY_HEADER_BYTES."""
    descr = np.lib.format.dtype_to_descr(np.dtype(np.float32))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    body = text.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"  # after the magic (6), version (2) and length (2)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _remove_stale(folder: Path, key: str, current: os.stat_result) -> None:
    """Remove the entries of the CSV's older versions (other options of this version stay), of an older
    FORMAT, and temporary folders of conversions that are gone."""
    for child in folder.iterdir():
        if child.name == key:
            continue
        if child.name.startswith(TEMPORARY):
            if not _dead_conversion(child):
                continue
        elif len(child.name) != KEY_LENGTH:
            continue  # not dlrun's
        elif _of_version(child, current):
            continue
        shutil.rmtree(child, ignore_errors=True)


def _of_version(entry: Path, current: os.stat_result) -> bool:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT and meta.get("version") == _version(current)


def _dead_conversion(temporary: Path) -> bool:
    """Whether a temporary folder's conversion is gone: this host's, when its process is; another host's (whose
    processes this one cannot see), or one whose name does not say, once it is FOREIGN_TEMPORARY_S old."""
    parts = temporary.name[len(TEMPORARY):].split("-")  # key, h + host, pid, mkdtemp's letters (no '-')
    if len(parts) == 4 and temporary_prefix(parts[0], 0).split("-")[2] == parts[1] and parts[2].isdigit():
        return not _alive(int(parts[2]))
    try:
        return time.time() - temporary.stat().st_mtime > FOREIGN_TEMPORARY_S
    except OSError:  # removed meanwhile
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
