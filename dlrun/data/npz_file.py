"""`npz`: features and targets from NumPy files: an .npz archive (np.savez) or a pair of .npy files.

Features larger than memory stay on disk: a .npy file is opened with np.load(mmap_mode='r'), and an
uncompressed .npz member is mapped at its data's offset inside the zip (np.load ignores mmap_mode for
archives). Targets are always read into memory. Every check on mapped features reads them a chunk of
rows at a time (lazy.chunk_rows), never all at once.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Annotated, Optional

import numpy as np

from dlrun.data.lazy import InMemory, MemmapFeatures, chunk_rows, stream_it
from dlrun.data.raw import DATASETS, RawData, encode_labels
from dlrun.errors import DataError, did_you_mean
from dlrun.registry import Choice

Task = Annotated[str, Choice("auto", "classification", "regression")]

SAVE_HINT = "Write it with numpy.savez(FILE, x=features, y=targets)."
NPY_MAGIC = b"\x93NUMPY"
ZIP_LOCAL_HEADER = 30  # bytes of a zip member's local header before its name and extra field


@DATASETS.register("npz", "Your NumPy .npz file: data.path=FILE with arrays x (N, ...) and y (N,)")
def npz(path: str | None = None, x_key: str = "x", y_key: str = "y", task: Task = "auto",
        y_path: Optional[str] = None, in_memory: InMemory = "auto") -> RawData:
    """Features x of shape (N, ...) and targets y of shape (N,) or (N, targets).

    The model sees each sample as x.shape[1:], so (N, C, H, W) arrays reach a CNN
    as images (scaled with one shared mean and scale); the raw features, and so
    the served model's input, are x flattened to (N, F). With task=auto, integer,
    boolean or string targets are class labels and floating-point ones values.
    With y_path, path is a .npy file of features and y_path a .npy file of targets.
    in_memory: auto reads features into memory up to lazy.IN_MEMORY_LIMIT_BYTES as
    float32 and maps them from disk beyond; false always maps them, true never.
    """
    if not path:
        raise DataError(f"data=npz needs the file: set data.path=FILE. {SAVE_HINT}")
    file = Path(path)
    if y_path:
        x, y, offset = _read_npy_pair(file, Path(y_path))
        x_key, y_key = file.name, Path(y_path).name  # the arrays' names in messages
    else:
        x, y, offset = _read_archive(file, x_key, y_key, in_memory)
    if x.ndim < 2:
        raise DataError(f"{path}: '{x_key}' has shape {x.shape}, but it needs one row per sample: (N, features) or "
                        "(N, channels, height, width). Reshape it, e.g. x.reshape(-1, 1) for one feature.")
    if y.ndim not in (1, 2):
        raise DataError(f"{path}: '{y_key}' has shape {y.shape}; it needs (N,) labels or values, or (N, targets) values.")
    if len(x) != len(y):
        raise DataError(f"{path}: '{x_key}' has {len(x)} samples (shape {x.shape}) but '{y_key}' has {len(y)} "
                        f"(shape {y.shape}); they need one target per sample.")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: '{x_key}' holds {x.dtype} values; features must be numbers.")
    features = _features(x, file, x_key, in_memory, offset)
    task = _infer_task(y) if task == "auto" else task
    sample_shape = tuple(int(d) for d in x.shape[1:])
    image = len(sample_shape) == 3  # (channels, height, width)
    if task == "classification":
        labels, names = _labels(y, path, y_key)
        return RawData(features, labels, "classification", sample_shape, names, image=image)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{path}: data.task=regression needs numeric targets, but '{y_key}' holds {y.dtype} values.")
    values = y.astype(np.float32).reshape(len(y), -1)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: '{y_key}' holds NaN or infinite values; fix or drop those samples.")
    return RawData(features, values, "regression", sample_shape, image=image)


def _features(x: np.ndarray, file: Path, key: str, in_memory, offset: int | None):
    """x as float32 (N, F) in memory, or a MemmapFeatures when x is mapped and should stream; checked for
    finite values either way (a mapped x a chunk of rows at a time).

    offset: where x's data starts inside the .npz archive (None for a .npy file, opened by np.load).
    """
    if not isinstance(x, np.memmap) or not stream_it(in_memory, int(np.prod(x.shape, dtype=np.int64)) * 4):
        with np.errstate(over="ignore"):
            flat = np.asarray(x).reshape(len(x), -1).astype(np.float32)  # a copy: never a view of the map
        if not np.isfinite(flat).all():
            raise _non_finite(file, key)
        return flat
    features = MemmapFeatures(str(file), x, offset=offset)
    if x.dtype.kind == "f":  # integers and booleans are always finite and within float32's range
        step = chunk_rows(features)
        for start in range(0, len(x), step):
            with np.errstate(over="ignore"):
                block = np.asarray(x[start:start + step], dtype=np.float32)
            if not np.isfinite(block).all():
                raise _non_finite(file, key)
    return features


def _non_finite(file: Path, key: str) -> DataError:
    return DataError(f"{file}: '{key}' holds NaN, infinite or too large values (beyond float32); fix or drop "
                     "those samples.")


def _read_npy_pair(file: Path, y_file: Path) -> tuple[np.ndarray, np.ndarray, None]:
    """The features mapped from one .npy file (read only as far as its header), the targets read from another."""
    x = _load_npy(file, "data.path", mmap=True)
    y = np.asarray(_load_npy(y_file, "data.y_path", mmap=False))
    return x, y, None


def _load_npy(file: Path, key: str, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise DataError(f"{key}: no file at '{file}' (from {Path.cwd()}). Give an existing .npy file "
                        "(numpy.save(FILE, array)).")
    if _magic(file) != NPY_MAGIC:
        raise DataError(f"{key}: cannot read '{file}' as a NumPy .npy file: it does not start with NumPy's header. "
                        "Write it with numpy.save(FILE, array).")
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # object arrays need pickle, which is off
        raise DataError(f"{key}: cannot read '{file}' as a NumPy .npy file: {_reason(error)}. "
                        "Store a plain numeric array (no Python objects).") from None


def _reason(error: Exception) -> str:
    """NumPy's reason, without its closing period, and without its advice to load pickled data (which
    dlrun never does, and which a user cannot ask for)."""
    text = str(error).rstrip(". ")
    return "it holds Python objects (pickled data), which dlrun does not load" if "pickle" in text else text


def _magic(file: Path) -> bytes:
    with file.open("rb") as head:
        return head.read(6)


def _read_archive(path: Path, x_key: str, y_key: str, in_memory) -> tuple[np.ndarray, np.ndarray, int | None]:
    """y in memory; x mapped (with its data's offset in the archive) unless in_memory=true, or, when the
    archive cannot be mapped, in memory (auto) or refused (false)."""
    if not path.is_file():
        raise DataError(f"data.path: no file at '{path}' (from {Path.cwd()}). Give an existing .npz file. {SAVE_HINT}")
    magic = _magic(path)
    if magic == NPY_MAGIC:
        raise DataError(f"data.path: '{path}' holds a single array (.npy), not an .npz archive of x and y. "
                        f"{SAVE_HINT} Or name its targets' .npy file: data.y_path=TARGETS.npy.")
    if not zipfile.is_zipfile(path):  # else np.load guesses a pickle and says so
        raise DataError(f"data.path: cannot read '{path}' as a NumPy .npz archive: it is not a zip file. {SAVE_HINT}")
    if not magic.startswith(b"PK"):  # a zip's directory at its end, other bytes in front: np.load sees no zip
        raise DataError(f"data.path: cannot read '{path}' as a NumPy .npz archive: it holds a zip archive with "
                        "other bytes in front of it (as when an archive is appended to another file). "
                        f"{SAVE_HINT}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"data.path: cannot read '{path}' as a NumPy .npz archive: {_reason(error)}. "
                        f"{SAVE_HINT}") from None
    with archive:
        keys = list(archive.files)
        for key, setting in ((x_key, "data.x_key"), (y_key, "data.y_key")):
            if key not in keys:
                same_but_case = [k for k in keys if k.lower() == key.lower()]  # difflib misses 'x' vs 'X'
                hint = f" Did you mean '{same_but_case[0]}'?" if same_but_case else did_you_mean(key, keys)
                raise DataError(f"{path} has no array '{key}' ({setting}).{hint} "
                                f"Its arrays: {', '.join(keys) or 'none'}. Set {setting}=NAME or rewrite the file.")
        try:
            y = archive[y_key]
            if in_memory is not True:
                mapped, offset, why_not = _map_member(path, x_key)
                if mapped is not None:
                    return mapped, y, offset
                if in_memory is False:
                    raise DataError(
                        f"data.in_memory=false: '{x_key}' in {path} cannot be memory-mapped: {why_not}. Save it with "
                        "numpy.savez (not savez_compressed), or as a .npy file with numpy.save and its targets in "
                        "another (data.path=FEATURES.npy data.y_path=TARGETS.npy); or set data.in_memory=auto.")
            return archive[x_key], y, None
        except (OSError, ValueError, zipfile.BadZipFile) as error:  # object arrays need pickle, which is off
            raise DataError(f"{path}: cannot read arrays '{x_key}' and '{y_key}': {_reason(error)}. "
                            "Store plain numeric arrays (no Python objects).") from None


def _map_member(path: Path, key: str) -> tuple[np.memmap | None, int | None, str | None]:
    """The archive's member KEY.npy as a read-only np.memmap and its data's offset in the file; or None, None
    and why it cannot be mapped."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None, None, "the archive is compressed (numpy.savez_compressed)"
    if info.flag_bits & 0x1:
        return None, None, "the archive is encrypted"
    with path.open("rb") as stream:
        stream.seek(info.header_offset)
        local = stream.read(ZIP_LOCAL_HEADER)
        if len(local) < ZIP_LOCAL_HEADER or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"member {info.filename} has no local header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        stream.seek(info.header_offset + ZIP_LOCAL_HEADER + name_length + extra_length)
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            return None, None, f"its .npy format version {version} is not one dlrun maps (1.0 or 2.0)"
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
        offset = stream.tell()
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if fortran_order and len(shape) > 1:
        return None, None, "it is stored in Fortran (column) order; save numpy.ascontiguousarray(x)"
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return None, None, "it holds no values"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape)), offset, None


def _infer_task(y: np.ndarray) -> str:
    return "regression" if y.dtype.kind == "f" else "classification"


def _labels(y: np.ndarray, path: str, y_key: str) -> tuple[np.ndarray, list[str]]:
    if y.ndim == 2 and y.shape[1] != 1:
        raise DataError(f"{path}: '{y_key}' has shape {y.shape}, but classification needs one label per sample, shape "
                        "(N,). For several values per sample set data.task=regression.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: '{y_key}' holds NaN or infinite labels; fix or drop those samples.")
    indices, names = encode_labels(y.reshape(-1).tolist())
    if len(names) < 2:
        raise DataError(f"{path}: '{y_key}' holds a single class ({names[0]!r}); classification needs two or more.")
    return indices, names
