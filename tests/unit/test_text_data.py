"""data=text: the seeded split, a tokenizer fitted on the training texts only, and token ids per split."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data.prepare import load_data, split_indices
from dlrun.data.sources import DATASETS
from dlrun.data.tokenizer import UNK
from tests.text_data import write_reviews


def _cfg(path, **options) -> dict:
    return {"name": "text", "batch_size": 16, "val_fraction": 0.2, "test_fraction": 0.2, "path": str(path),
            "text": "review", "target": "label", "tokens": "word", "vocab_size": None, "lowercase": True,
            "max_length": 10, "delimiter": ",", **options}


def _write(path, rows: list[tuple[str, str]]):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("review", "label"), *rows])
    return path


@pytest.fixture(scope="module")
def unique_words(tmp_path_factory):
    """60 rows, each with a word of its own ("wN") beside a shared one: the vocabulary shows which rows fitted it."""
    path = tmp_path_factory.mktemp("text") / "unique.csv"
    return _write(path, [(f"shared w{i}", "yes" if i % 3 else "no") for i in range(60)])


def test_the_tokenizer_is_fitted_on_the_training_split_only(unique_words):
    bundle = load_data(_cfg(unique_words), seed=3)
    train, val, test = (bundle.split_rows[name] for name in ("train", "val", "test"))
    assert set(bundle.tokenizer.vocab[2:]) == {"shared"} | {f"w{i}" for i in train}
    unknown = bundle.tokenizer.vocab.index(UNK)
    for x in (bundle.x_val, bundle.x_test):  # each val or test row's own word is unknown
        assert (x[:, 1] == unknown).all() and (x[:, 0] == bundle.tokenizer.vocab.index("shared")).all()


def test_the_split_is_the_seeded_stratified_split_of_the_other_data(unique_words):
    cfg = _cfg(unique_words)
    bundle = load_data(cfg, seed=3)
    raw = DATASETS.get("text").builder(**{k: v for k, v in cfg.items() if k not in ("name", "batch_size", "val_fraction",
                                                                                     "test_fraction")})
    expected = split_indices(raw, 0.2, 0.2, 3)
    for name, rows in zip(("train", "val", "test"), expected):
        assert np.array_equal(bundle.split_rows[name], rows)
    assert bundle.y_test.bincount().tolist() == [4, 8]  # 1 in 3 rows is "no", in every split


def test_a_text_bundle_holds_token_ids_and_an_identity_preprocess(tmp_path):
    bundle = load_data(_cfg(write_reviews(tmp_path / "r.csv", rows=50), max_length=7), seed=0)
    assert bundle.x_train.dtype == torch.int64 and bundle.x_train.shape[1:] == (7,)
    assert bundle.sample_shape == (7,) and bundle.task == "classification" and bundle.class_names == ["neg", "pos"]
    assert isinstance(bundle.preprocess, torch.nn.Identity)
    assert bundle.raw_example.dtype == np.int64 and np.array_equal(bundle.raw_example, bundle.x_train[:5].numpy())
    assert bundle.text_column == "review" and len(bundle.text_example) == 5
    assert np.array_equal(bundle.tokenizer.encode(bundle.text_example), bundle.raw_example)


def test_vocab_size_keeps_the_most_frequent_training_tokens(tmp_path):
    bundle = load_data(_cfg(write_reviews(tmp_path / "r.csv", rows=50), vocab_size=5), seed=0)
    assert len(bundle.tokenizer.vocab) == 7 and int(bundle.x_train.max()) <= 6


def test_characters_and_case(tmp_path):
    path = _write(tmp_path / "c.csv", [("Ab", "x"), ("ba", "y")] * 10)
    bundle = load_data(_cfg(path, tokens="char", lowercase=False, max_length=3), seed=0)
    assert set(bundle.tokenizer.vocab[2:]) == {"A", "b", "a"}
    assert bundle.x_train.shape[1:] == (3,) and (bundle.x_train[:, 2] == 0).all()


def test_na_is_a_text_and_integer_classes_sort_as_numbers(tmp_path):
    path = _write(tmp_path / "n.csv", [("NA", "10"), ("null", "2"), ("None", "10"), ("nan", "2")] * 6)
    bundle = load_data(_cfg(path), seed=0)
    assert bundle.class_names == ["2", "10"]
    assert {"na", "null", "none", "nan"} <= set(bundle.tokenizer.vocab)


def test_the_fingerprint_follows_the_texts(tmp_path):
    rows = [(f"text {i}", str(i % 2)) for i in range(20)]
    first = load_data(_cfg(_write(tmp_path / "a.csv", rows)), seed=0).fingerprint
    assert load_data(_cfg(_write(tmp_path / "b.csv", rows)), seed=0).fingerprint == first
    rows[7] = ("text 7!", rows[7][1])
    assert load_data(_cfg(_write(tmp_path / "c.csv", rows)), seed=0).fingerprint != first


def test_data_text_picks_a_text_model_unless_model_is_given(tmp_path):
    keys = [f"data.path={tmp_path / 'r.csv'}", "data.text=review", "data.target=label"]
    assert validate(compose(["data=text", *keys])).choices["model"] == "text_bag"
    assert validate(compose(["data=text", "model=text_transformer", *keys])).choices["model"] == "text_transformer"


@pytest.mark.parametrize("delimiter", ["tab", "\\t", "\t"])
def test_a_tab_separated_file_reads_with_a_tab_delimiter_however_written(tmp_path, delimiter):
    rows = [(f"text {i}, with a comma", "yes" if i % 2 else "no") for i in range(20)]
    with open(tmp_path / "t.tsv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t").writerows([("review", "label"), *rows])
    commas = load_data(_cfg(_write(tmp_path / "c.csv", rows)), seed=0)
    tabs = load_data(_cfg(tmp_path / "t.tsv", delimiter=delimiter), seed=0)
    assert tabs.fingerprint == commas.fingerprint and tabs.class_names == ["no", "yes"]


@pytest.mark.parametrize("source", ["text", "csv", "timeseries"])
@pytest.mark.parametrize("delimiter, shown", [("", "empty"), ("\\t\\t", "'\\\\t\\\\t', 4 characters")])
def test_a_delimiter_that_is_not_one_character_is_named_with_the_fix(tmp_path, source, delimiter, shown):
    from dlrun.errors import DataError

    path = _write(tmp_path / "c.csv", [("1", "2")] * 4)
    options = {"text": {"text": "review", "target": "label"}, "csv": {"target": "label", "in_memory": True},
               "timeseries": {"column": "label"}}[source]
    with pytest.raises(DataError) as refused:
        DATASETS.get(source).builder(**DATASETS.bind(source, {"path": str(path), "delimiter": delimiter,
                                                              **options}, "data"))
    message = str(refused.value)
    assert f"data.delimiter is {shown}" in message and "data.delimiter=tab" in message


@pytest.mark.parametrize("class_names, kind", [(["neg", "pos"], "string"), (["2", "10"], "long")])
def test_the_recorded_dataset_names_the_class_column_by_what_it_holds(class_names, kind):
    import json
    from types import SimpleNamespace

    from dlrun.tracking.datasets import _schema

    data = SimpleNamespace(y_train=np.zeros(4), task="classification", text_column="review", class_names=class_names)
    columns = json.loads(json.dumps(_schema({"target": "label"}, data)))["mlflow_colspec"]
    assert columns == [{"type": "string", "name": "review", "required": True},
                       {"type": kind, "name": "label", "required": True}]


def test_logging_a_text_model_prints_no_mlflow_info_lines():
    """MLflow logs "Validating input example..." at INFO as a text run's pyfunc model is logged."""
    import logging

    import mlflow.pyfunc  # noqa: F401  (MLflow configures its loggers as it is imported)

    from dlrun.training.setup import quiet_lightning

    quiet_lightning()
    assert not any(logging.getLogger(name).isEnabledFor(logging.INFO) for name in ("mlflow.pyfunc", "mlflow.models"))
