"""`npz`: arrays x and y from a NumPy .npz archive (np.savez), any sample shape."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np

from dlrun.data.raw import DATASETS, RawData, encode_labels
from dlrun.errors import DataError, did_you_mean
from dlrun.registry import Choice

Task = Annotated[str, Choice("auto", "classification", "regression")]

SAVE_HINT = "Write it with numpy.savez(FILE, x=features, y=targets)."


@DATASETS.register("npz", "Your NumPy .npz file: data.path=FILE with arrays x (N, ...) and y (N,)")
def npz(path: str | None = None, x_key: str = "x", y_key: str = "y", task: Task = "auto") -> RawData:
    """Features x of shape (N, ...) and targets y of shape (N,) or (N, targets).

    The model sees each sample as x.shape[1:], so (N, C, H, W) arrays reach a CNN
    as images (scaled with one shared mean and scale); the raw features, and so
    the served model's input, are x flattened to (N, F). With task=auto, integer,
    boolean or string targets are class labels and floating-point ones values.
    """
    if not path:
        raise DataError(f"data=npz needs the file: set data.path=FILE. {SAVE_HINT}")
    x, y = _read_arrays(Path(path), x_key, y_key)
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
    with np.errstate(over="ignore"):
        flat = x.reshape(len(x), -1).astype(np.float32)
    if not np.isfinite(flat).all():
        raise DataError(f"{path}: '{x_key}' holds NaN, infinite or too large values (beyond float32); fix or drop those samples.")
    task = _infer_task(y) if task == "auto" else task
    sample_shape = tuple(int(d) for d in x.shape[1:])
    image = len(sample_shape) == 3  # (channels, height, width)
    if task == "classification":
        labels, names = _labels(y, path, y_key)
        return RawData(flat, labels, "classification", sample_shape, names, image=image)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{path}: data.task=regression needs numeric targets, but '{y_key}' holds {y.dtype} values.")
    values = y.astype(np.float32).reshape(len(y), -1)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: '{y_key}' holds NaN or infinite values; fix or drop those samples.")
    return RawData(flat, values, "regression", sample_shape, image=image)


def _read_arrays(path: Path, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"data.path: no file at '{path}' (from {Path.cwd()}). Give an existing .npz file. {SAVE_HINT}")
    with path.open("rb") as head:
        magic = head.read(6)
    if not (zipfile.is_zipfile(path) or magic == b"\x93NUMPY"):  # else np.load guesses a pickle and says so
        raise DataError(f"data.path: cannot read '{path}' as a NumPy .npz archive: it is not a zip file. {SAVE_HINT}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"data.path: cannot read '{path}' as a NumPy .npz archive: {error}. {SAVE_HINT}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"data.path: '{path}' holds a single array (.npy), not an .npz archive of x and y. {SAVE_HINT}")
    with archive:
        keys = list(archive.files)
        for key, setting in ((x_key, "data.x_key"), (y_key, "data.y_key")):
            if key not in keys:
                same_but_case = [k for k in keys if k.lower() == key.lower()]  # difflib misses 'x' vs 'X'
                hint = f" Did you mean '{same_but_case[0]}'?" if same_but_case else did_you_mean(key, keys)
                raise DataError(f"{path} has no array '{key}' ({setting}).{hint} "
                                f"Its arrays: {', '.join(keys) or 'none'}. Set {setting}=NAME or rewrite the file.")
        try:
            return archive[x_key], archive[y_key]
        except (OSError, ValueError, zipfile.BadZipFile) as error:  # object arrays need pickle, which is off
            raise DataError(f"{path}: cannot read arrays '{x_key}' and '{y_key}': {error}. "
                            "Store plain numeric arrays (no Python objects).") from None


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
