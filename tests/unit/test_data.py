"""load_data / split_indices on the bundled data sets and on CSV files."""

import functools
import re

import numpy as np
import pytest
import torch

from dlrun.data.prepare import load_data, split_indices
from dlrun.data.sources import DATASETS
from dlrun.errors import DataError

# pandas 3 hands out read-only arrays; torch warns when it wraps one (harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")

FRACTIONS = {"digits": (0.15, 0.15), "iris": (0.2, 0.2), "diabetes": (0.15, 0.15)}
ROWS = {"digits": 1797, "iris": 150, "diabetes": 442}


def _cfg(name, val=None, test=None, **options):
    default_val, default_test = FRACTIONS.get(name, (0.2, 0.2))
    return {"name": name, "batch_size": 16, "val_fraction": default_val if val is None else val,
            "test_fraction": default_test if test is None else test, **options}


@functools.lru_cache(maxsize=None)
def _bundle(name: str, seed: int = 0):
    return load_data(_cfg(name), seed)


@functools.lru_cache(maxsize=None)
def _raw(name: str):
    return DATASETS.get(name).builder()


def _splits(name: str, seed: int = 0):
    val, test = FRACTIONS[name]
    return split_indices(_raw(name), val, test, seed)


def _write(tmp_path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _csv_rows(n: int, label=lambda i: "cat" if i % 2 else "dog") -> str:
    return "f1,f2,label\n" + "".join(f"{i},{(i * 7) % 5},{label(i)}\n" for i in range(n))


# --- splits of the bundled data sets ------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "iris", "diabetes"])
def test_split_sizes_add_up(name):
    bundle = _bundle(name)
    sizes = [len(bundle.x_train), len(bundle.x_val), len(bundle.x_test)]
    assert sum(sizes) == ROWS[name]
    assert [len(bundle.y_train), len(bundle.y_val), len(bundle.y_test)] == sizes
    val, test = FRACTIONS[name]
    assert abs(sizes[1] - val * ROWS[name]) <= 1
    assert abs(sizes[2] - test * ROWS[name]) <= 1


@pytest.mark.parametrize("name", ["digits", "iris", "diabetes"])
def test_no_row_is_in_two_splits(name):
    train, val, test = _splits(name)
    everything = np.concatenate([train, val, test])
    assert len(np.unique(everything)) == len(everything) == ROWS[name]
    assert set(everything.tolist()) == set(range(ROWS[name]))


@pytest.mark.parametrize("name", ["digits", "iris"])
def test_stratified_split_keeps_class_proportions(name):
    bundle = _bundle(name)
    classes = bundle.num_classes
    overall = torch.cat([bundle.y_train, bundle.y_val, bundle.y_test]).bincount(minlength=classes).double()
    overall = overall / overall.sum()
    for y in (bundle.y_train, bundle.y_val, bundle.y_test):
        share = y.bincount(minlength=classes).double() / len(y)
        # Within two rows of the exact proportion for every class.
        assert torch.all((share - overall).abs() <= 2 / len(y)), (share, overall)


def test_iris_split_is_exactly_balanced():
    bundle = _bundle("iris")
    assert bundle.y_val.bincount().tolist() == [10, 10, 10]
    assert bundle.y_test.bincount().tolist() == [10, 10, 10]
    assert bundle.y_train.bincount().tolist() == [30, 30, 30]


@pytest.mark.parametrize("name", ["iris", "diabetes"])
def test_same_seed_gives_the_same_split(name):
    first = load_data(_cfg(name), 7)
    second = load_data(_cfg(name), 7)
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, split), getattr(second, split)), split
    assert first.fingerprint == second.fingerprint


@pytest.mark.parametrize("name", ["iris", "diabetes", "digits"])
def test_different_seed_gives_a_different_split(name):
    a, b = _splits(name, 0), _splits(name, 1)
    assert not np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])
    assert not torch.equal(_bundle(name, 0).x_val, _bundle(name, 1).x_val)


def test_split_indices_match_the_bundle():
    # load_data uses split_indices: the bundle's val targets are the raw targets at those rows.
    _, val, _ = _splits("diabetes", 3)
    bundle = _bundle("diabetes", 3)
    raw_y = _raw("diabetes").y[val, 0]
    restored = bundle.postprocess(bundle.y_val)[:, 0].numpy()
    np.testing.assert_allclose(restored, raw_y, rtol=1e-5)


# --- preprocessing ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "iris", "diabetes"])
def test_preprocess_maps_raw_features_to_the_stored_tensors(name):
    bundle = _bundle(name)
    raw = _raw(name)
    for rows, stored in zip(_splits(name), (bundle.x_train, bundle.x_val, bundle.x_test)):
        with torch.no_grad():
            served = bundle.preprocess(torch.as_tensor(raw.x[rows], dtype=torch.float32))
        assert served.shape == stored.shape
        torch.testing.assert_close(served, stored)


@pytest.mark.parametrize("name", ["digits", "iris", "diabetes"])
def test_raw_example_goes_through_preprocess_to_the_first_train_rows(name):
    bundle = _bundle(name)
    assert bundle.raw_example.shape == (5, _raw(name).x.shape[1])
    with torch.no_grad():
        served = bundle.preprocess(torch.as_tensor(bundle.raw_example))
    torch.testing.assert_close(served, bundle.x_train[:5])


def test_digits_are_images_scaled_with_one_train_mean_and_scale():
    bundle = _bundle("digits")
    assert bundle.sample_shape == (1, 8, 8)
    assert bundle.x_train.shape[1:] == (1, 8, 8)
    assert abs(bundle.x_train.mean().item()) < 1e-4
    assert abs(bundle.x_train.std(unbiased=False).item() - 1) < 1e-4
    # One scale for all pixels: an always-blank pixel stays constant rather than exploding.
    raw = _raw("digits")
    train, _, _ = _splits("digits")
    mean, std = raw.x[train].astype(np.float64).mean(), raw.x[train].astype(np.float64).std()
    expected = ((raw.x[train] - mean) / std).reshape(-1, 1, 8, 8)
    np.testing.assert_allclose(bundle.x_train.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["iris", "diabetes"])
def test_tabular_features_are_standardized_per_column_on_train(name):
    bundle = _bundle(name)
    assert bundle.sample_shape == (_raw(name).x.shape[1],)
    torch.testing.assert_close(bundle.x_train.double().mean(0), torch.zeros(bundle.x_train.shape[1], dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(bundle.x_train.double().std(0, unbiased=False),
                               torch.ones(bundle.x_train.shape[1], dtype=torch.float64), atol=1e-4, rtol=0)


def test_regression_targets_are_standardized_on_train():
    bundle = _bundle("diabetes")
    assert bundle.task == "regression" and bundle.num_classes == 0 and bundle.out_features == 1
    assert bundle.y_train.dtype == torch.float32 and bundle.y_train.shape[1] == 1
    raw = _raw("diabetes")
    train, val, test = _splits("diabetes")
    y_mean, y_std = raw.y[train].astype(np.float64).mean(0), raw.y[train].astype(np.float64).std(0)
    for rows, stored in ((train, bundle.y_train), (val, bundle.y_val), (test, bundle.y_test)):
        np.testing.assert_allclose(stored.numpy(), (raw.y[rows] - y_mean) / y_std, rtol=1e-5, atol=1e-6)
    # Fitted on train alone: train is exactly centred, the held-out splits are not.
    assert abs(bundle.y_train.double().mean().item()) < 1e-6
    assert abs(bundle.y_train.double().std(unbiased=False).item() - 1) < 1e-5
    assert abs(bundle.y_val.double().mean().item()) > 1e-4


def test_regression_postprocess_restores_the_users_units():
    bundle = _bundle("diabetes")
    train, _, _ = _splits("diabetes")
    with torch.no_grad():
        restored = bundle.postprocess(bundle.y_train)
    np.testing.assert_allclose(restored.numpy(), _raw("diabetes").y[train], rtol=1e-5)


def test_classification_bundle_fields():
    bundle = _bundle("digits")
    assert bundle.task == "classification" and bundle.num_classes == 10 and bundle.out_features == 10
    assert bundle.y_train.dtype == torch.long
    assert bundle.class_names == [str(i) for i in range(10)]
    probs = bundle.postprocess(torch.randn(4, 10))
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))


# --- csv: task inference ------------------------------------------------------------------


def test_csv_string_labels_are_classification(tmp_path):
    path = _write(tmp_path, _csv_rows(20))
    bundle = load_data(_cfg("csv", path=path, target="label"), 0)
    assert bundle.task == "classification"
    assert bundle.class_names == ["cat", "dog"] and bundle.num_classes == 2
    assert bundle.sample_shape == (2,)
    assert len(bundle.x_train) + len(bundle.x_val) + len(bundle.x_test) == 20


def test_csv_float_target_is_regression(tmp_path):
    path = _write(tmp_path, "f1,f2,y\n" + "".join(f"{i},{i % 3},{i * 0.37}\n" for i in range(20)))
    bundle = load_data(_cfg("csv", path=path, target="y"), 0)
    assert bundle.task == "regression" and bundle.num_classes == 0
    assert bundle.y_train.shape[1] == 1 and bundle.y_train.dtype == torch.float32


def test_csv_few_integer_values_are_classification(tmp_path):
    path = _write(tmp_path, "f1,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30)))
    bundle = load_data(_cfg("csv", path=path, target="y"), 0)
    assert bundle.task == "classification" and bundle.num_classes == 3


def test_csv_task_can_be_forced(tmp_path):
    path = _write(tmp_path, "f1,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30)))
    bundle = load_data(_cfg("csv", path=path, target="y", task="regression"), 0)
    assert bundle.task == "regression"


def test_csv_constant_feature_column_stays_finite(tmp_path):
    path = _write(tmp_path, "f1,const,label\n" + "".join(f"{i},5,{i % 2}\n" for i in range(20)))
    bundle = load_data(_cfg("csv", path=path, target="label"), 0)
    assert torch.isfinite(bundle.x_train).all()
    assert torch.all(bundle.x_train[:, 1] == 0)


def test_csv_delimiter_option(tmp_path):
    path = _write(tmp_path, _csv_rows(20).replace(",", ";"))
    bundle = load_data(_cfg("csv", path=path, target="label", delimiter=";"), 0)
    assert bundle.sample_shape == (2,)


# --- csv: errors --------------------------------------------------------------------------


def test_csv_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=str(missing), target="label"), 0)
    assert str(missing) in str(info.value) and "no file" in str(info.value)


def test_csv_without_path_or_target_says_which_key(tmp_path):
    with pytest.raises(DataError, match="data.path=FILE"):
        load_data(_cfg("csv", target="label"), 0)
    path = _write(tmp_path, _csv_rows(20))
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path), 0)
    assert "data.target=COLUMN" in str(info.value) and path in str(info.value)


def test_csv_empty_file_names_it(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    assert path in str(info.value) and "empty" in str(info.value)


def test_csv_header_only_names_it(tmp_path):
    path = _write(tmp_path, "f1,label\n")
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    assert path in str(info.value) and "no data rows" in str(info.value)


def test_csv_missing_target_column_has_did_you_mean(tmp_path):
    path = _write(tmp_path, _csv_rows(20))
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="lable"), 0)
    message = str(info.value)
    assert "column 'lable' (data.target) is not in" in message and path in message
    assert "Did you mean 'label'?" in message
    assert "Its columns: f1, f2, label." in message


def test_csv_wrong_delimiter_hints_at_it(tmp_path):
    path = _write(tmp_path, _csv_rows(20).replace(",", ";"))
    with pytest.raises(DataError, match="is data.delimiter right"):
        load_data(_cfg("csv", path=path, target="label"), 0)


def test_csv_non_numeric_feature_column_is_named(tmp_path):
    path = _write(tmp_path, "f1,colour,label\n" + "".join(f"{i},{'red' if i % 2 else 'blue'},{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    message = str(info.value)
    assert path in message and "'colour'" in message and "not numeric" in message
    assert "'f1'" not in message


def test_csv_nan_feature_values_name_the_column(tmp_path):
    rows = "".join(f"{i},{'' if i == 4 else i},{i % 2}\n" for i in range(20))
    path = _write(tmp_path, "f1,gappy,label\n" + rows)
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    message = str(info.value)
    assert path in message
    assert "columns gappy hold empty, NaN" in message


def test_csv_explicit_nan_and_inf_are_rejected(tmp_path):
    path = _write(tmp_path, "f1,f2,label\n" + "".join(f"{i},{'nan' if i == 3 else 'inf' if i == 5 else i},{i % 2}\n"
                                                      for i in range(20)))
    with pytest.raises(DataError, match="columns f2 hold empty, NaN"):
        load_data(_cfg("csv", path=path, target="label"), 0)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_csv_value_overflowing_float32_names_the_column(tmp_path):
    path = _write(tmp_path, "f1,huge,label\n" + "".join(f"{i},{'1e39' if i == 2 else i},{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    assert path in str(info.value) and "columns huge hold" in str(info.value)


def test_csv_empty_target_values_name_the_target(tmp_path):
    rows = "".join(f"{i},{'' if i == 6 else ('a' if i % 2 else 'b')}\n" for i in range(20))
    path = _write(tmp_path, "f1,label\n" + rows)
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    assert path in str(info.value) and "target column 'label' has empty values" in str(info.value)


def test_csv_single_class_target_is_named(tmp_path):
    path = _write(tmp_path, _csv_rows(20, label=lambda i: "only"))
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    message = str(info.value)
    assert path in message and "'label'" in message and "single class ('only')" in message


def test_csv_non_numeric_target_for_regression_is_named(tmp_path):
    path = _write(tmp_path, _csv_rows(20))
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label", task="regression"), 0)
    assert path in str(info.value) and "'label' is not numeric" in str(info.value)


def test_csv_target_only_has_no_features(tmp_path):
    path = _write(tmp_path, "label\n" + "".join(f"{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError, match=re.escape(f"{path} has no feature columns besides the target 'label'")):
        load_data(_cfg("csv", path=path, target="label"), 0)


def test_csv_too_few_rows_for_the_fractions(tmp_path):
    path = _write(tmp_path, "f1,y\n1,0.5\n2,0.7\n3,0.1\n")
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="y", val=0.15, test=0.15), 0)
    message = str(info.value)
    assert "3 rows" in message
    assert "data.val_fraction=0.15" in message and "data.test_fraction=0.15" in message
    assert "empty split" in message


def test_csv_too_few_rows_per_class_to_stratify(tmp_path):
    path = _write(tmp_path, "f1,label\n1,x\n2,y\n3,x\n")
    with pytest.raises(DataError) as info:
        load_data(_cfg("csv", path=path, target="label"), 0)
    message = str(info.value)
    assert "cannot split 3 rows" in message and "stratified by class" in message
    assert "data.val_fraction=0.2" in message
