"""Bad input: one clear message, exit 2, no traceback, and nothing written to MLflow."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_rejected(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = result.output
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["model=cnnn"], ["unknown model option 'cnnn'", "Did you mean 'cnn'?", "Options: cnn,", "mlp"]),
        (["optim=adamm"], ["unknown optim option 'adamm'", "Did you mean 'adam'?"]),
        (["optim.lrr=0.1"], ["unknown config key 'optim.lrr'", "Did you mean 'optim.lr'?"]),
        (["optim.lr=abc"], ["'optim.lr' must be a number", "'abc'"]),
        (["optim.lr=-1"], ["'optim.lr' must be greater than 0", "-1"]),
        (["data.batch_size=0"], ["'data.batch_size' must be at least 1"]),
        (["trainer.max_epochs=-3"], ["'trainer.max_epochs' must be at least 1", "-3"]),
        (["data.val_fraction=0.5", "data.test_fraction=0.5"], ["leave no training data"]),
        (["data.test_fraction=0"], ["'data.test_fraction' must be greater than 0"]),
        (["trainer.max_epoch=3"], ["Did you mean 'trainer.max_epochs'?"]),
        (["model.layers.0.type=conv3d"], ["unknown layer type 'conv3d'", "model.layers[0]", "Did you mean 'conv2d'?"]),
        (["model.layers.0.kernal_size=3"], ["unknown config key 'model.layers.0.kernal_size'", "Did you mean 'model.layers.0.kernel_size'?"]),
        (["activation.name=rellu"], ["unknown activation 'rellu'", "Did you mean 'relu'?"]),
        (["+foo=1"], ["unknown config key 'foo'"]),
        (["model.width=${nope}"], ["cannot resolve the config at 'model.width'", "nope"]),
        (["model"], ["'model' is not an override", "KEY=VALUE"]),
        (["optim=adam,sgd"], ["lists several values"]),
        (["data=csv"], ["data=csv needs the file", "data.path=FILE"]),
        (["data=csv", "data.path=missing.csv", "data.target=y"], ["no file at 'missing.csv'"]),
        (["data=diabetes", "loss=cross_entropy"], ["loss 'cross_entropy' does not fit a regression task", "mse"]),
        (["data=iris", "model=cnn"], ["conv2d at model.layers[0]", "model=mlp"]),
        (["trainer.precision=17"], ["the trainer config does not work here", "Precision 17 is invalid"]),
    ],
)
def test_bad_override_is_rejected_before_any_run(workdir, overrides, fragments):
    result = invoke("train", *overrides)
    assert_rejected(result, *fragments)
    assert not (workdir / "mlflow.db").exists(), "a validation error must not create an MLflow run"
    assert not (workdir / "outputs").exists()


def test_csv_without_target_column_names_file_and_columns(workdir):
    (workdir / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    result = invoke("train", "data=csv", "data.path=d.csv", "data.target=lable")
    assert_rejected(result, "column 'lable'", "d.csv", "Did you mean 'label'?", "a, b, label")


def test_csv_with_text_feature_names_the_column(workdir):
    rows = "\n".join(f"{i},{'red' if i % 2 else 'blue'},{i % 2}" for i in range(40))
    (workdir / "d.csv").write_text("x,color,y\n" + rows + "\n")
    result = invoke("train", "data=csv", "data.path=d.csv", "data.target=y")
    assert_rejected(result, "'color'", "not numeric")


def test_unknown_layer_type_in_a_user_model_file(workdir):
    (workdir / "conf" / "model").mkdir(parents=True)
    (workdir / "conf" / "model" / "bad.yaml").write_text("layers:\n  - {type: flatten}\n  - {type: lineer}\n")
    result = invoke("train", "model=bad")
    assert_rejected(result, "unknown layer type 'lineer'", "model.layers[1]", "Did you mean 'linear'?")


def test_misspelt_layer_key_in_a_user_model_file(workdir):
    (workdir / "conf" / "model").mkdir(parents=True)
    (workdir / "conf" / "model" / "bad.yaml").write_text("layers:\n  - {type: flatten}\n  - {type: linear, out_featurs: 3}\n")
    result = invoke("train", "model=bad")
    assert_rejected(result, "unknown key 'model.layers[1].out_featurs'", "Did you mean 'out_features'?")


def test_gpu_trainer_without_a_gpu_is_a_config_error(workdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; trainer=gpu is valid here")
    result = invoke("train", "trainer=gpu")
    assert_rejected(result, "the trainer config does not work here", "dlrun configs trainer")
    assert not (workdir / "mlflow.db").exists()


def test_unknown_config_group_in_configs(workdir):
    result = invoke("configs", "modle")
    assert_rejected(result, "unknown config group 'modle'", "Did you mean 'model'?")


def test_missing_config_dir(workdir):
    result = invoke("train", "--config-dir", "nowhere", "--cfg")
    assert_rejected(result, "--config-dir", "nowhere")


# data=text: the file's contents, written into reviews.csv; the overrides after data=text's keys
TEXT_KEYS = ("data=text", "data.path=reviews.csv", "data.text=review", "data.target=label")
GOOD_TEXT = "review,label\n" + "".join(f"text number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20))


@pytest.mark.parametrize(
    "content, overrides, fragments",
    [
        (GOOD_TEXT, ["data.text=null"], ["data=text needs the text column", "data.text=COLUMN"]),
        (GOOD_TEXT, ["data.target=review"], ["data.text and data.target both name the column 'review'"]),
        (GOOD_TEXT, ["data.text=reveiw"], ["column 'reveiw' (data.text)", "reviews.csv", "Did you mean 'review'?"]),
        (GOOD_TEXT, ["data.target=labels"], ["column 'labels' (data.target)", "Did you mean 'label'?"]),
        (GOOD_TEXT.replace("text number 3,", ",").replace("text number 6,", "  ,"), [],
         ["text column 'review' is empty in data rows 4, 7", "Fill or drop"]),
        (GOOD_TEXT.replace("pos", "neg"), [], ["target 'label' has a single class ('neg')"]),
        (GOOD_TEXT, ["data.vocab_size=0"], ["'data.vocab_size' must be at least 1"]),
        (GOOD_TEXT, ["data.max_length=0"], ["'data.max_length' must be at least 1"]),
        (GOOD_TEXT, ["data.tokens=bpe"], ["data.tokens", "bpe", "word", "char"]),
        (GOOD_TEXT.encode().replace(b"number 5", b"n\xe9mber 5"), [],
         ["'reviews.csv' is not UTF-8: byte 109 (line 7)", "b'\\xe9'", "Save the file as UTF-8"]),
        (GOOD_TEXT, ["model=mlp"], ["token ids", "model=text_lstm or model=text_transformer"]),
        (GOOD_TEXT, ["augment=noise"], ["augment=noise", "token ids", "augment=none"]),
    ],
    ids=["no-text-column", "text-is-target", "text-column", "target-column", "empty-text", "one-class", "vocab-size-0", "max-length-0", "tokens",
         "not-utf8", "model-without-embedding", "augment"],
)
def test_bad_text_data_is_rejected_before_any_run(workdir, content, overrides, fragments):
    path = workdir / "reviews.csv"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert_rejected(invoke("train", *TEXT_KEYS, *overrides), *fragments)
    assert not (workdir / "mlflow.db").exists(), "bad text data must not create an MLflow run"
    assert not (workdir / "outputs").exists()
