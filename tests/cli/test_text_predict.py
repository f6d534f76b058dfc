"""A text run's served model in every command that uses it: predict on a CSV's text column, the Python
API, eval on other texts, export (refused), the model rebuilt from best.ckpt; one tiny run shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import dlrun
from dlrun.cli import app
from dlrun.errors import DataError
from tests.text_data import write_reviews

runner = CliRunner()
TEXTS = ["the film was great and lovely", "dull, boring and awful", "an ending unlike any", "superb!"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """One epoch of the shipped text model, made small, on 80 generated reviews; (folder, run id, model uri)."""
    folder = tmp_path_factory.mktemp("text-run")
    write_reviews(folder / "reviews.csv", rows=80)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store: ./mlflow.db
        result = dlrun.train(["data=text", "data.path=reviews.csv", "data.text=review", "data.target=label",
                              "data.max_length=12", "model=text_lstm", "model.dim=8", "model.hidden=8", "trainer.max_epochs=1",
                              "tracking.system_metrics=false"])
    return folder, result.run_id, result.model_uri


@pytest.fixture
def in_run_folder(text_run, monkeypatch):
    folder, run_id, model_uri = text_run
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder, run_id, model_uri


def served_probabilities(model_uri: str, texts: list[str]) -> np.ndarray:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri).predict(texts)


def test_predict_reads_the_text_column_of_a_training_shaped_csv(in_run_folder):
    folder, run_id, model_uri = in_run_folder
    pd.DataFrame({"label": ["pos", "neg", "pos", "neg"], "review": TEXTS, "id": range(4)}).to_csv("new.csv", index=False)
    result = runner.invoke(app, ["predict", run_id, "--input", "new.csv", "--output", "out/p.csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "out" / "p.csv")
    assert list(table.columns) == ["predicted", "prob_neg", "prob_pos"]
    expected = served_probabilities(model_uri, TEXTS)
    np.testing.assert_allclose(table[["prob_neg", "prob_pos"]].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert list(table["predicted"]) == [["neg", "pos"][i] for i in expected.argmax(axis=1)]


@pytest.mark.parametrize("content, message", [
    (b"reveiw,label\nthe film,pos\n", "has no column 'review', the text column the run trained on (its columns: "
                                      "reveiw, label). Did you mean 'reveiw'?"),
    (b"review,label\nthe film,pos\n,neg\n  ,pos\n", "column 'review' of 'bad.csv' is empty in row 2, 3"),
    (b"review,label\nthe film,pos\ncaf\xe9 cr\xe8me,neg\n", "'bad.csv' is not UTF-8: byte 29 (line 3) is b'\\xe9'"),
], ids=["missing-column", "empty-text", "not-utf8"])
def test_predict_bad_text_input_exits_2_naming_it(in_run_folder, content, message):
    folder, run_id, _ = in_run_folder
    (folder / "bad.csv").write_bytes(content)
    result = runner.invoke(app, ["predict", run_id, "--input", "bad.csv", "--output", "bad_out.csv"])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (folder / "bad_out.csv").exists()


def test_python_api_takes_strings(in_run_folder):
    _, run_id, model_uri = in_run_folder
    expected = served_probabilities(model_uri, TEXTS)
    frame = pd.DataFrame({"id": range(4), "review": TEXTS})  # the text column need not come first
    np.testing.assert_allclose(dlrun.predict(run_id, frame), expected, rtol=1e-5, atol=1e-6)
    model = dlrun.load_model(run_id)
    import torch

    with torch.no_grad():
        np.testing.assert_allclose(model(TEXTS).numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="no text column 'review'"):
        dlrun.predict(run_id, pd.DataFrame({"comment": TEXTS}))


def test_model_rebuilt_from_checkpoint_reads_text_as_the_logged_one(in_run_folder):
    """What a sweep trial that logged no model serves: the same probabilities from best.ckpt."""
    from dlrun.lifecycle.checkpoint_model import CheckpointModel
    from dlrun.lifecycle.stored import load_run

    _, run_id, model_uri = in_run_folder
    rebuilt = CheckpointModel(load_run(run_id))
    assert [spec.type.name for spec in rebuilt.metadata.get_input_schema().inputs] == ["string"]
    np.testing.assert_allclose(rebuilt.predict(TEXTS), served_probabilities(model_uri, TEXTS), rtol=1e-4, atol=1e-5)


def test_eval_on_other_texts_scores_in_the_runs_class_order(in_run_folder):
    folder, run_id, model_uri = in_run_folder
    pd.DataFrame({"review": TEXTS, "label": ["pos", "neg", "pos", "neg"]}).to_csv("other.csv", index=False)
    result = runner.invoke(app, ["eval", run_id, "data.path=other.csv"])
    assert result.exit_code == 0, result.output
    predicted = served_probabilities(model_uri, TEXTS).argmax(axis=1)
    accuracy = float((predicted == np.array([1, 0, 1, 0])).mean())
    scores = dict(item.split("=") for item in result.output.split())
    assert float(scores["acc"]) == pytest.approx(accuracy) and scores["rows"] == "4"
    pd.DataFrame({"review": TEXTS[:2], "label": ["pos", "meh"]}).to_csv("unknown.csv", index=False)
    result = runner.invoke(app, ["eval", run_id, "data.path=unknown.csv"])
    assert result.exit_code == 2 and "classes the run" in result.output and "meh" in result.output


def test_export_refuses_a_text_run_and_writes_nothing(in_run_folder):
    folder, run_id, _ = in_run_folder
    result = runner.invoke(app, ["export", run_id, "--format", "torchscript", "--output", "m.pt"])
    assert result.exit_code == 2 and "reads raw text" in result.output and "dlrun predict" in result.output
    assert "--env-manager local" in result.output  # MLflow's default environment would install PyPI's dlrun
    assert not (folder / "m.pt").exists()


@pytest.mark.parametrize("tamper", ["extra-file", "code"])
def test_a_text_model_with_more_than_its_data_is_refused(in_run_folder, tmp_path, tamper):
    """dlrun loads a text model only as it logs it: dlrun's loader, no code, and exactly its data files."""
    import shutil

    import yaml
    from mlflow.tracking import MlflowClient

    folder, run_id, model_uri = in_run_folder
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    model_dir = Path(client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location.removeprefix("file://"))
    saved = tmp_path / "saved"
    shutil.copytree(model_dir, saved)
    try:
        if tamper == "extra-file":
            (model_dir / "data" / "text_model" / "hook.py").write_text("raise SystemExit('ran')\n")
        else:
            spec = yaml.safe_load((model_dir / "MLmodel").read_text())
            spec["flavors"]["python_function"]["code"] = "code"
            (model_dir / "MLmodel").write_text(yaml.safe_dump(spec))
        pd.DataFrame({"review": TEXTS}).to_csv("some.csv", index=False)
        result = runner.invoke(app, ["predict", run_id, "--input", "some.csv", "--output", "tampered.csv"])
        assert result.exit_code == 2 and "is not as dlrun train logs it" in " ".join(result.output.split())
        assert not (folder / "tampered.csv").exists()
    finally:
        shutil.rmtree(model_dir)
        shutil.copytree(saved, model_dir)


def test_a_text_model_whose_program_was_altered_to_run_code_is_refused(in_run_folder, tmp_path):
    """model.pt2's sample inputs rewritten as a pickled os.system call: torch.export.load would run it
    (it falls back to weights_only=False); predict and MLflow's own loader refuse the program first."""
    import shutil

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from dlrun.errors import ConfigError
    from tests.tampered_program import logged_program, tamper

    folder, run_id, model_uri = in_run_folder
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    model_dir = Path(client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location.removeprefix("file://"))
    program, marker = logged_program(model_dir), tmp_path / "PWNED"
    shutil.copy(program, tmp_path / "saved.pt2")
    try:
        tamper(tmp_path / "saved.pt2", program, "sample-inputs", marker)
        pd.DataFrame({"review": TEXTS}).to_csv("some.csv", index=False)
        result = runner.invoke(app, ["predict", run_id, "--input", "some.csv", "--output", "tampered.csv"])
        assert result.exit_code == 2 and "the program model.pt2 of the text model in" in result.output, result.output
        assert "does not load as tensors only" in " ".join(result.output.split()) and "Traceback" not in result.output
        with pytest.raises(ConfigError, match="is refused"):
            mlflow.pyfunc.load_model(str(model_dir))
        assert not marker.exists() and not (folder / "tampered.csv").exists()
    finally:
        shutil.copy(tmp_path / "saved.pt2", program)


def test_predict_reads_the_input_with_the_runs_delimiter(in_run_folder, monkeypatch):
    """A run trained on a TSV (data.delimiter=tab) reads a TSV to predict on."""
    import dlrun.lifecycle.predict as predicting
    from dlrun.lifecycle.stored import load_run

    folder, run_id, model_uri = in_run_folder

    def tab_run(run, uri=None):
        stored = load_run(run, uri)
        stored.config["data"]["delimiter"] = "tab"
        return stored

    monkeypatch.setattr(predicting, "load_run", tab_run)
    pd.DataFrame({"label": ["pos"] * 4, "review": [text + ", too" for text in TEXTS]}).to_csv(
        "new.tsv", sep="\t", index=False)
    assert predicting.predict(run_id, "new.tsv", "out/tsv.csv") == 4
    table = pd.read_csv(folder / "out" / "tsv.csv")
    expected = served_probabilities(model_uri, [text + ", too" for text in TEXTS])
    np.testing.assert_allclose(table[["prob_neg", "prob_pos"]].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_eval_on_other_texts_scores_a_single_class_and_refuses_another_tokenizer(in_run_folder):
    folder, run_id, model_uri = in_run_folder
    pd.DataFrame({"review": TEXTS, "label": ["pos"] * 4}).to_csv("positive.csv", index=False)
    result = runner.invoke(app, ["eval", run_id, "data.path=positive.csv"])
    assert result.exit_code == 0, result.output
    accuracy = float((served_probabilities(model_uri, TEXTS).argmax(axis=1) == 1).mean())
    assert float(dict(item.split("=") for item in result.output.split())["acc"]) == pytest.approx(accuracy)
    for override in ("data.max_length=30", "data.tokens=char", "data.lowercase=false", "data.vocab_size=5"):
        result = runner.invoke(app, ["eval", run_id, "data.path=positive.csv", override])
        assert result.exit_code == 2 and "cannot change its tokenizer" in result.output, result.output
        assert override in result.output and "Traceback" not in result.output
