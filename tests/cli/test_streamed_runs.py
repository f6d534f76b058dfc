"""Exactness with streamed data: a folder of PNGs decoded per batch by two DataLoader workers trains
exactly as the same folder held in memory, `reproduce` is bit-exact, and a run stopped mid-epoch by an
image that became unreadable is exit 2 with its checkpoint, and resumed ends with the uninterrupted
run's weights. (A signal's stop resumes through the same loader state, tested in test_resume.py; the
streaming loader's resume position in tests/unit/test_streaming.py.)

One uninterrupted run (module-scoped) is the reference for every test.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data.prepare import load_data
from dlrun.data.streaming import LazySplit
from dlrun.lifecycle.evaluate import evaluate
from dlrun.lifecycle.reproduce import reproduce
from dlrun.lifecycle.resume import resume
from dlrun.training.module import DlrunModule
from dlrun.training.run import train
from tests.cli.test_resume import _weights
from tests.conftest import mlflow_runs

# 40 images, 28 of them training rows in batches of 8: 4 steps an epoch, the last one short. Dropout and
# noise augmentation make the random state matter; two workers read the batches.
STREAMED = ["data=image_folder", "data.path=images", "data.in_memory=false", "data.num_workers=2",
            "data.batch_size=8", "model=cnn", "model.width=4", "regularization=dropout", "augment=noise",
            "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "tracking.log_model=false",
            "tracking.system_metrics=false"]


def _train(*extra: str):
    return train(validate(compose(STREAMED + list(extra))), plots=False)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A module-wide current folder (one MLflow store) holding images/{dark,light}/i.png, 8x8 RGB."""
    folder = tmp_path_factory.mktemp("streamed")
    rng = np.random.default_rng(0)
    for label, level in (("dark", 70), ("light", 170)):
        (folder / "images" / label).mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(rng.normal(level, 45, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "images" / label / f"{i}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("DLRUN_PLUGINS", raising=False)
        yield folder


@pytest.fixture(scope="module")
def uninterrupted(place):
    return _train()


def _assert_same_weights(result_or_dir, reference) -> None:
    ours = _weights(result_or_dir)
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, ours[name]), name


class _Checkpoints:
    """What _weights needs of a run: its checkpoint folder."""

    def __init__(self, folder):
        self.checkpoint_dir = folder


def test_streamed_and_in_memory_train_identically(place, uninterrupted):
    held = _train("data.in_memory=true", "data.num_workers=0")
    _assert_same_weights(held, uninterrupted)
    assert held.test_metrics == uninterrupted.test_metrics
    assert held.history == uninterrupted.history


def test_only_the_pass_being_read_has_workers(place):
    """The sanity check's validation pass ends with it, and the training pass with its last batch: at most
    data.num_workers=2 workers at any batch (a pass ends once its last batch is fetched, which Lightning does
    a batch ahead), where each pass left open would add two."""
    import psutil
    import pytorch_lightning as pl

    others = {child.pid for child in psutil.Process().children()}
    seen = {"train": set(), "validation": set()}

    def count(stage: str) -> None:
        seen[stage].add(len([c for c in psutil.Process().children() if c.pid not in others
                             and c.status() != psutil.STATUS_ZOMBIE]))

    class Workers(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
            count("train")

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_index, dataloader_index=0):
            if not trainer.sanity_checking:
                count("validation")

    train(validate(compose(STREAMED + ["trainer.max_epochs=1"])), callbacks=[Workers()], plots=False)
    assert 2 in seen["train"] and max(seen["train"] | seen["validation"]) == 2, seen


def test_eval_of_a_streamed_run_scores_its_test_split_again(place, uninterrupted):
    assert evaluate(uninterrupted.run_id) == pytest.approx(uninterrupted.test_metrics, rel=1e-6)


def test_reproduce_of_a_streamed_run_is_bit_exact(place, uninterrupted, monkeypatch, tmp_path):
    readers = tmp_path / "readers"  # the process of each LazySplit read, one line each: workers append too
    original = LazySplit.__getitem__

    def getitem(self, positions):
        with readers.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return original(self, positions)

    monkeypatch.setattr(LazySplit, "__getitem__", getitem)
    reproduction = reproduce(uninterrupted.run_id)
    assert reproduction.matches(atol=0), reproduction.report(0)
    assert not [d for d in reproduction.drift if "data" in d[0] or "dataset" in d[0]], reproduction.drift
    _assert_same_weights(_Checkpoints(place / "outputs" / reproduction.new_id / "checkpoints"), uninterrupted)
    client, _ = mlflow_runs(place / "mlflow.db")
    plots = {a.path for a in client.list_artifacts(reproduction.new_id, "plots")}
    assert "plots/confusion_matrix.png" in plots, "the test split's predictions are read batch by batch"
    pids = set(readers.read_text().split())
    assert pids and str(os.getpid()) not in pids, "workers read every split, the confusion matrix's test split too"
    inputs = client.get_run(reproduction.new_id).inputs.dataset_inputs
    assert len(inputs) == 3 and json.loads(inputs[0].dataset.profile)["num_rows"] in (6, 28)


def test_an_image_unreadable_mid_run_is_exit_2_with_a_checkpoint_and_resumes(place, uninterrupted, monkeypatch):
    run = validate(compose(STREAMED))
    data = load_data(run.data, run.seed)
    files = sorted((place / "images").glob("*/*.png"))
    victim = files[int(data.split_rows["train"][0])]  # a training image: read again in epoch 1
    intact = victim.read_bytes()
    original = DlrunModule.training_step

    def training_step(self, batch, batch_index):
        if self.global_step == 1:  # its header survives; decoding it fails from now on
            victim.write_bytes(intact[:60])
        return original(self, batch, batch_index)

    monkeypatch.setattr(DlrunModule, "training_step", training_step)
    try:
        result = CliRunner().invoke(app, ["train", *STREAMED])
    finally:
        victim.write_bytes(intact)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "worker" not in result.output, result.output
    client, runs = mlflow_runs(place / "mlflow.db")
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    run_id = failed.info.run_id
    assert f"cannot read image '{victim.relative_to(place)}'" in result.output, result.output
    assert "marked FAILED and its checkpoint is" in result.output and f"dlrun resume {run_id}" in result.output
    stopped = torch.load(place / "outputs" / run_id / "checkpoints" / "last.ckpt", weights_only=True)
    assert 4 <= stopped["global_step"] < 8, "stopped in epoch 1, where the image was read again"
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")], "the checkpoints are uploaded"
    monkeypatch.setattr(DlrunModule, "training_step", original)
    resumed = resume(run_id)
    _assert_same_weights(resumed, uninterrupted)


def test_a_reading_process_that_dies_is_exit_2_with_a_checkpoint_and_resumes(place, uninterrupted, monkeypatch):
    from dlrun.data.image_files import ImageFiles

    dying = place / "kill-a-reader"
    original_rows, original_step = ImageFiles.rows, DlrunModule.training_step

    def rows(self, indices):  # a worker killed as the OOM killer kills one (forked: it sees this patch)
        if dying.exists() and torch.utils.data.get_worker_info() is not None:
            dying.unlink(missing_ok=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return original_rows(self, indices)

    def training_step(self, batch, batch_index):
        if self.global_step == 5:  # in epoch 1
            dying.touch()
        return original_step(self, batch, batch_index)

    monkeypatch.setattr(ImageFiles, "rows", rows)
    monkeypatch.setattr(DlrunModule, "training_step", training_step)
    result = CliRunner().invoke(app, ["train", *STREAMED])
    monkeypatch.setattr(DlrunModule, "training_step", original_step)
    monkeypatch.setattr(ImageFiles, "rows", original_rows)
    dying.unlink(missing_ok=True)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "DataLoader" not in result.output, result.output
    assert "a process reading images died (signal: Killed" in result.output, result.output
    _, runs = mlflow_runs(place / "mlflow.db")
    run_id = runs[0].info.run_id  # the newest
    assert runs[0].info.status == "FAILED" and f"dlrun resume {run_id}" in result.output
    stopped = torch.load(place / "outputs" / run_id / "checkpoints" / "last.ckpt", weights_only=True)
    # Workers read ahead: the first read after step 5 is epoch 1's last batch or its validation.
    assert 5 <= stopped["global_step"] <= 8, "stopped in epoch 1"
    _assert_same_weights(resume(run_id), uninterrupted)
