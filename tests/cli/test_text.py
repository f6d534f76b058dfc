"""data=text end to end: one text run, then eval, reproduce (bit-exact), resume mid-epoch and a grid on it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.lifecycle.resume import resume
from dlrun.tracking.system_metrics import model_metrics
from dlrun.training.callbacks import StopOnSignal
from dlrun.training.module import DlrunModule
from dlrun.training.outcome import Interrupted
from dlrun.training.run import train
from tests.conftest import mlflow_runs
from tests.text_data import write_reviews

runner = CliRunner()
# 100 rows: 70 train rows in batches of 32, 3 steps an epoch; dropout makes the random state matter.
# The reviews have 12 tokens at most: max_length 16 keeps the recurrent steps few.
DATA = ["data=text", "data.path=reviews.csv", "data.text=review", "data.target=label", "data.max_length=16",
        "regularization=dropout", "trainer.enable_progress_bar=false", "tracking.system_metrics=false"]
OVERRIDES = [*DATA, "trainer.max_epochs=2", "tracking.log_model=false"]  # the served text model: test_text_predict.py


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """The folder (the current one during this module) and the id of one finished text run."""
    folder = tmp_path_factory.mktemp("text-run")
    write_reviews(folder / "reviews.csv", rows=100)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = runner.invoke(app, ["train", *OVERRIDES])
        assert result.exit_code == 0, result.output
        yield folder, result.output.strip().splitlines()[-1].removeprefix("run_id: ")


def _run(folder, run_id):
    return next(r for r in mlflow_runs(folder / "mlflow.db")[1] if r.info.run_id == run_id)


def test_a_text_run_records_its_data_and_params(text_run):
    folder, run_id = text_run
    run = _run(folder, run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.text"] == "review" and run.data.params["data.tokens"] == "word"
    assert run.data.tags["mlflow.runName"].startswith("text_bag-text-") and run.data.tags["dlrun.data_fingerprint"]
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0
    schemas = {each.dataset.schema for each in run.inputs.dataset_inputs}  # one per split, each the CSV's columns
    assert len(run.inputs.dataset_inputs) == 3 and len(schemas) == 1
    assert json.loads(schemas.pop())["mlflow_colspec"] == [{"type": "string", "name": "review", "required": True},
                                                          {"type": "string", "name": "label", "required": True}]


def test_eval_equals_the_logged_test_metrics(text_run):
    folder, run_id = text_run
    result = runner.invoke(app, ["eval", run_id])
    assert result.exit_code == 0, result.output
    scored = dict(item.split("=") for item in result.output.split())
    logged = _run(folder, run_id).data.metrics
    assert float(scored["test/acc"]) == pytest.approx(logged["test/acc"], abs=1e-6)
    assert float(scored["test/loss"]) == pytest.approx(logged["test/loss"], abs=1e-6)


def test_reproduce_gives_identical_metrics(text_run):
    folder, run_id = text_run
    result = runner.invoke(app, ["reproduce", run_id])
    assert result.exit_code == 0, result.output
    assert "metrics identical: yes" in result.output
    new_id = result.output.strip().splitlines()[-1].removeprefix("run_id: ")
    assert model_metrics(_run(folder, new_id).data.metrics) == model_metrics(_run(folder, run_id).data.metrics)


def test_a_text_run_resumed_mid_epoch_ends_with_the_uninterrupted_weights(text_run, monkeypatch):
    folder, run_id = text_run
    original = DlrunModule.training_step

    def training_step(self, batch, batch_index):
        if self.global_step == 4:  # the second of epoch 1's three steps
            next(c for c in self.trainer.callbacks if isinstance(c, StopOnSignal)).request()
        return original(self, batch, batch_index)

    with monkeypatch.context() as patch:
        patch.setattr(DlrunModule, "training_step", training_step)
        with pytest.raises(Interrupted, match="dlrun resume"):
            train(validate(compose(OVERRIDES)))
    killed = next(r for r in mlflow_runs(folder / "mlflow.db")[1] if r.info.status == "KILLED")
    resumed = resume(killed.info.run_id)
    expected = torch.load(folder / "outputs" / run_id / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights = torch.load(resumed.checkpoint_dir / "last.ckpt", weights_only=True)["state_dict"]
    assert expected.keys() == weights.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, weights[name]), name
    assert model_metrics(_run(folder, killed.info.run_id).data.metrics) == model_metrics(_run(folder, run_id).data.metrics)


def test_a_grid_over_a_text_models_option_runs_every_trial(text_run):
    folder, _ = text_run
    result = runner.invoke(app, ["train", "-m", *OVERRIDES, "model.dim=8,16"])
    assert result.exit_code == 0, result.output
    assert "[2/2] trial 1  complete" in result.output and "model.dim=16" in result.output
    best = result.output.split("best: trial ")[1].split("run ")[1].split()[0]
    assert _run(folder, best).data.params["model.dim"] in ("8", "16")
