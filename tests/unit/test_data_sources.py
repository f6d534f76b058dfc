"""The data sources beyond the bundled sets: timeseries, npz, image_folder and the synthetic sets."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dlrun.data.prepare import load_data, split_indices
from dlrun.data.sources import DATASETS
from dlrun.errors import DataError

# pandas 3 hands out read-only arrays; torch warns when it wraps one (harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")


def _cfg(name: str, val: float = 0.2, test: float = 0.2, **options) -> dict:
    return {"name": name, "batch_size": 16, "val_fraction": val, "test_fraction": test, **options}


def _raw(name: str, **options):
    return DATASETS.get(name).builder(**DATASETS.bind(name, options, "data"))


def test_every_new_source_is_registered():
    assert {"timeseries", "npz", "image_folder", "blobs", "spirals", "sine"} <= set(DATASETS.names())


def test_validation_and_sources_import_no_torch_pandas_or_pil():
    code = ("import sys, dlrun.config.validate, dlrun.data.sources, dlrun.data.augment, dlrun.catalog; "
            "print(sorted(m for m in ('torch', 'pandas', 'PIL') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- timeseries ---------------------------------------------------------------------------


def _series_csv(tmp_path, values, header="t,value", name="series.csv") -> str:
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return str(path)


def _trend(n: int = 120) -> np.ndarray:
    """A rising series: later windows have larger values, so a leak shows in the scaling."""
    return np.arange(n, dtype=np.float32) * 0.5 + np.sin(np.arange(n, dtype=np.float32))


def test_timeseries_windows_and_targets(tmp_path):
    values = _trend(50)
    raw = _raw("timeseries", path=_series_csv(tmp_path, values), column="value", window=5, horizon=2)
    assert raw.task == "regression" and raw.sample_shape == (5,)
    assert raw.x.shape == (50 - 5 - 2 + 1, 5) and raw.y.shape == (44, 2)
    assert raw.x.dtype == np.float32 and raw.y.dtype == np.float32
    for i in (0, 17, 43):
        np.testing.assert_allclose(raw.x[i], values[i : i + 5])
        np.testing.assert_allclose(raw.y[i], values[i + 5 : i + 7])  # the next `horizon` values


def test_timeseries_column_may_be_omitted_for_a_one_column_file(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("level\n" + "".join(f"{v}\n" for v in _trend(40)))
    raw = _raw("timeseries", path=str(path), window=4)
    assert raw.x.shape == (36, 4) and raw.y.shape == (36, 1)


@pytest.mark.parametrize("window,horizon,seed", [(5, 1, 0), (8, 3, 1), (1, 1, 2)])
def test_timeseries_split_is_chronological_with_no_shared_step(tmp_path, window, horizon, seed):
    values = np.arange(200, dtype=np.float32)  # value == time step, so steps can be read off the data
    raw = _raw("timeseries", path=_series_csv(tmp_path, values), column="value", window=window, horizon=horizon)
    train, val, test = split_indices(raw, 0.15, 0.15, seed)
    steps = {name: np.concatenate([raw.x[rows], raw.y[rows]], axis=1) for name, rows in
             (("train", train), ("val", val), ("test", test))}
    # Every train window's time steps precede every val window's, and val's precede test's.
    assert steps["train"].max() < steps["val"].min()
    assert steps["val"].max() < steps["test"].min()
    span = raw.time_span  # the same, from the steps each window declares
    assert span[train, 1].max() < span[val, 0].min() and span[val, 1].max() < span[test, 0].min()
    n = len(raw.x)
    assert len(val) == round(n * 0.15) and len(test) == round(n * 0.15)
    assert len(train) == n - len(val) - len(test) - 2 * (window + horizon - 1)  # the straddling windows dropped
    assert test[-1] == n - 1  # the latest window is the last test sample


def test_timeseries_split_ignores_the_seed(tmp_path):
    raw = _raw("timeseries", path=_series_csv(tmp_path, _trend(100)), column="value", window=6)
    for a, b in zip(split_indices(raw, 0.2, 0.2, 0), split_indices(raw, 0.2, 0.2, 99)):
        np.testing.assert_array_equal(a, b)


def test_timeseries_scaling_is_fitted_on_the_training_part_only(tmp_path):
    values = _trend(150)
    path = _series_csv(tmp_path, values)
    bundle = load_data(_cfg("timeseries", path=path, column="value", window=6, val=0.15, test=0.15), 0)
    raw = _raw("timeseries", path=path, column="value", window=6)
    train, val, _ = split_indices(raw, 0.15, 0.15, 0)
    standardize = bundle.preprocess[0]
    fit = raw.x[train].astype(np.float64)
    # One mean and scale for every lag, from the training windows alone.
    np.testing.assert_allclose(standardize.mean.numpy(), np.full(6, fit.mean()), rtol=1e-5)
    np.testing.assert_allclose(standardize.scale.numpy(), np.full(6, fit.std()), rtol=1e-5)
    assert abs(bundle.x_train.double().mean().item()) < 1e-5
    assert bundle.x_val.mean().item() > 1  # the later, higher values are not centred
    np.testing.assert_allclose(bundle.postprocess.mean.numpy(), raw.y[train].astype(np.float64).mean(0), rtol=1e-5)
    assert bundle.x_train.shape[1:] == (6,) and bundle.y_train.shape[1] == 1
    torch.testing.assert_close(bundle.preprocess(torch.as_tensor(raw.x[val])), bundle.x_val)


def test_timeseries_missing_column_has_did_you_mean(tmp_path):
    path = _series_csv(tmp_path, _trend(40))
    with pytest.raises(DataError) as info:
        _raw("timeseries", path=path, column="valeu")
    message = str(info.value)
    assert "column 'valeu' (data.column)" in message and path in message and "Did you mean 'value'?" in message


def test_timeseries_needs_the_column_when_the_file_has_several(tmp_path):
    path = _series_csv(tmp_path, _trend(40))
    with pytest.raises(DataError, match="set data.column=COLUMN"):
        _raw("timeseries", path=path)


def test_timeseries_non_numeric_column_names_the_row(tmp_path):
    values = [str(v) for v in _trend(40)]
    values[7] = "abc"
    path = _series_csv(tmp_path, values)
    with pytest.raises(DataError) as info:
        _raw("timeseries", path=path, column="value")
    message = str(info.value)
    assert path in message and "not numeric" in message and "row 8" in message and "'abc'" in message


def test_timeseries_empty_value_is_named(tmp_path):
    values = [str(v) for v in _trend(40)]
    values[3] = ""
    with pytest.raises(DataError, match="empty, NaN, infinite or too large value at data row 4"):
        _raw("timeseries", path=_series_csv(tmp_path, values), column="value")


def test_timeseries_too_few_rows_for_window_and_horizon(tmp_path):
    path = _series_csv(tmp_path, _trend(10))
    with pytest.raises(DataError) as info:
        _raw("timeseries", path=path, column="value", window=8, horizon=3)
    message = str(info.value)
    assert path in message and "10 rows" in message and "data.window=8 + data.horizon=3" in message and "11" in message


def test_timeseries_too_short_to_split_after_dropping_overlaps(tmp_path):
    path = _series_csv(tmp_path, _trend(30))
    with pytest.raises(DataError, match="chronological split .* leaves no training windows"):
        load_data(_cfg("timeseries", path=path, column="value", window=12), 0)


def test_timeseries_without_path_says_which_key():
    with pytest.raises(DataError, match="data.path=FILE"):
        _raw("timeseries", column="value")


# --- npz ----------------------------------------------------------------------------------


def _npz(tmp_path, name="data.npz", **arrays) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_npz_tabular_classification(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path, x=rng.normal(size=(60, 5)), y=np.arange(60) % 3)
    bundle = load_data(_cfg("npz", path=path), 0)
    assert bundle.task == "classification" and bundle.num_classes == 3 and bundle.sample_shape == (5,)
    assert bundle.class_names == ["0", "1", "2"]
    assert len(bundle.x_train) + len(bundle.x_val) + len(bundle.x_test) == 60


def test_npz_images_keep_their_shape_and_flatten_raw_features(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 1, 8, 8)).astype(np.uint8)
    path = _npz(tmp_path, x=x, y=np.arange(40) % 2)
    raw = _raw("npz", path=path)
    assert raw.x.shape == (40, 64) and raw.x.dtype == np.float32 and raw.image
    assert raw.sample_shape == (1, 8, 8)
    np.testing.assert_array_equal(raw.x[3], x[3].reshape(-1))
    bundle = load_data(_cfg("npz", path=path), 0)
    assert bundle.x_train.shape[1:] == (1, 8, 8)


def test_npz_float_targets_are_regression(tmp_path):
    path = _npz(tmp_path, x=np.ones((30, 2)), y=np.linspace(0, 1, 30))
    raw = _raw("npz", path=path)
    assert raw.task == "regression" and raw.y.shape == (30, 1)
    multi = _raw("npz", path=_npz(tmp_path, "multi.npz", x=np.ones((30, 2)), y=np.ones((30, 3))))
    assert multi.y.shape == (30, 3)


def test_npz_task_can_be_forced_and_keys_renamed(tmp_path):
    path = _npz(tmp_path, features=np.ones((30, 2)), labels=np.arange(30) % 2)
    raw = _raw("npz", path=path, x_key="features", y_key="labels", task="regression")
    assert raw.task == "regression"
    strings = _raw("npz", path=_npz(tmp_path, "s.npz", x=np.ones((4, 2)), y=np.array(["b", "a", "b", "a"])))
    assert strings.class_names == ["a", "b"] and strings.y.tolist() == [1, 0, 1, 0]


def test_npz_missing_key_lists_the_arrays(tmp_path):
    path = _npz(tmp_path, X=np.ones((10, 2)), y=np.zeros(10))
    with pytest.raises(DataError) as info:
        _raw("npz", path=path)
    message = str(info.value)
    assert path in message and "no array 'x' (data.x_key)" in message and "Did you mean 'X'?" in message
    assert "Its arrays: X, y" in message


def test_npz_lengths_must_match(tmp_path):
    path = _npz(tmp_path, x=np.ones((10, 2)), y=np.zeros(9, dtype=int))
    with pytest.raises(DataError) as info:
        _raw("npz", path=path)
    assert path in str(info.value) and "'x' has 10 samples" in str(info.value) and "'y' has 9" in str(info.value)


@pytest.mark.parametrize("x,y,fragment", [
    (np.ones(10), np.zeros(10, dtype=int), "'x' has shape (10,)"),
    (np.ones((10, 2)), np.zeros((10, 2, 2)), "'y' has shape (10, 2, 2)"),
    (np.ones((10, 2)), np.zeros((10, 2), dtype=int), "one label per sample"),
])
def test_npz_wrong_dimensions_are_named(tmp_path, x, y, fragment):
    path = _npz(tmp_path, x=x, y=y)
    with pytest.raises(DataError) as info:
        _raw("npz", path=path)
    assert path in str(info.value) and fragment in str(info.value)


def test_npz_missing_or_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="no file at"):
        _raw("npz", path=str(tmp_path / "nope.npz"))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read .*broken.npz"):
        _raw("npz", path=str(broken))


# --- image_folder -------------------------------------------------------------------------


def _png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _image_tree(root, classes=("cat", "dog"), per_class=6, size=(6, 4), mode="RGB"):
    """root/CLASS/i.png with distinct random pixels; size is (width, height)."""
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    for name in classes:
        for i in range(per_class):
            _png(root / name / f"{i}.png", rng.integers(0, 256, size=shape))
    return root


def test_image_folder_rgb_shapes_and_pixels(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    raw = _raw("image_folder", path=str(root))
    assert raw.task == "classification" and raw.image
    assert raw.sample_shape == (3, 4, 6) and raw.x.shape == (12, 72)
    assert raw.class_names == ["cat", "dog"] and raw.y.tolist() == [0] * 6 + [1] * 6
    pixels = np.asarray(Image.open(root / "cat" / "0.png"))  # (H, W, C)
    np.testing.assert_array_equal(raw.x[0], pixels.transpose(2, 0, 1).reshape(-1))  # channel, row, column
    assert raw.x.min() >= 0 and raw.x.max() <= 255


def test_image_folder_grayscale_and_resize(tmp_path):
    root = _image_tree(tmp_path / "imgs", size=(10, 7))
    raw = _raw("image_folder", path=str(root), grayscale=True, image_size=5)
    assert raw.sample_shape == (1, 5, 5) and raw.x.shape == (12, 25)


def test_image_folder_reads_jpeg_and_ignores_other_files(tmp_path):
    root = _image_tree(tmp_path / "imgs", per_class=5)
    Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(root / "cat" / "extra.JPG", format="JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    raw = _raw("image_folder", path=str(root))
    assert np.bincount(raw.y).tolist() == [6, 5]


def test_image_folder_trains_a_bundle(tmp_path):
    root = _image_tree(tmp_path / "imgs", classes=("a", "b", "c"), per_class=8)
    bundle = load_data(_cfg("image_folder", path=str(root), val=0.25, test=0.25), 0)
    assert bundle.sample_shape == (3, 4, 6) and bundle.x_train.shape[1:] == (3, 4, 6) and bundle.num_classes == 3


def test_image_folder_missing_is_named(tmp_path):
    with pytest.raises(DataError) as info:
        _raw("image_folder", path=str(tmp_path / "nope"))
    assert "no folder at" in str(info.value) and "nope" in str(info.value) and "one sub-folder per class" in str(info.value)


def test_image_folder_empty_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the folder '.*empty' is empty"):
        _raw("image_folder", path=str(tmp_path / "empty"))


def test_image_folder_with_one_class_folder(tmp_path):
    root = _image_tree(tmp_path / "imgs", classes=("cat",))
    with pytest.raises(DataError, match=r"one class folder \('cat'\); classification needs two or more"):
        _raw("image_folder", path=str(root))


def test_image_folder_with_images_but_no_class_folders(tmp_path):
    _png(tmp_path / "flat" / "1.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="holds images but no class folders"):
        _raw("image_folder", path=str(tmp_path / "flat"))


def test_image_folder_class_without_images(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    (root / "bird").mkdir()
    (root / "bird" / "readme.txt").write_text("todo")
    with pytest.raises(DataError) as info:
        _raw("image_folder", path=str(root))
    assert "bird" in str(info.value) and "no PNG or JPEG files" in str(info.value) and "readme.txt" in str(info.value)


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    _png(root / "dog" / "big.png", np.zeros((9, 9, 3)))
    with pytest.raises(DataError) as info:
        _raw("image_folder", path=str(root))
    message = str(info.value)
    assert "differ in size" in message and "big.png" in message and "9x9" in message and "data.image_size=N" in message
    assert _raw("image_folder", path=str(root), image_size=8).sample_shape == (3, 8, 8)


def test_image_folder_corrupt_file_is_named(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as info:
        _raw("image_folder", path=str(root))
    assert "cannot read image" in str(info.value) and "broken.png" in str(info.value)


def test_image_folder_path_that_is_a_file(tmp_path):
    file = tmp_path / "x.png"
    _png(file, np.zeros((4, 4)))
    with pytest.raises(DataError, match="is a file"):
        _raw("image_folder", path=str(file))


# --- synthetic ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,options,x_shape,y_shape,task", [
    ("blobs", {"n_samples": 90, "centers": 4, "n_features": 3}, (90, 3), (90,), "classification"),
    ("spirals", {"n_samples": 90, "classes": 3}, (90, 2), (90,), "classification"),
    ("sine", {"length": 100, "window": 10}, (90, 10), (90, 1), "regression"),
])
def test_synthetic_shapes_and_task(name, options, x_shape, y_shape, task):
    raw = _raw(name, **options)
    assert raw.x.shape == x_shape and raw.y.shape == y_shape and raw.task == task
    assert raw.x.dtype == np.float32 and raw.sample_shape == x_shape[1:]
    if task == "classification":
        assert np.bincount(raw.y).min() >= x_shape[0] // (options.get("centers") or options["classes"]) - 1


@pytest.mark.parametrize("name", ["blobs", "spirals", "sine"])
def test_synthetic_is_repeatable_under_a_seed_and_differs_across_seeds(name):
    a, b, c = _raw(name, seed=3), _raw(name, seed=3), _raw(name, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_sine_is_a_noisy_sine_split_chronologically():
    clean, noisy = _raw("sine", noise=0.0, length=200, window=5), _raw("sine", noise=0.3, length=200, window=5)
    assert np.abs(clean.x).max() <= 1.0 + 1e-6 and np.abs(noisy.x).max() > 1.0
    np.testing.assert_allclose(clean.y[:-1, 0], clean.x[1:, -1])  # the target is the value after the window
    train, val, test = split_indices(clean, 0.2, 0.2, 0)
    assert train.max() < val.min() and val.max() < test.min()


def test_synthetic_through_load_data_uses_the_configured_seed():
    first = load_data(_cfg("spirals", n_samples=100, seed=5), 0)
    again = load_data(_cfg("spirals", n_samples=100, seed=5), 0)
    other = load_data(_cfg("spirals", n_samples=100, seed=6), 0)
    assert first.fingerprint == again.fingerprint != other.fingerprint
