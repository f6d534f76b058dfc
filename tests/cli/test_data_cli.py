"""`dlrun train` on the new data sources and augmentations, in-process through Typer's CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import mlflow_runs

runner = CliRunner()
QUIET = ("trainer.enable_progress_bar=false",)


def _train(*args: str):
    return runner.invoke(app, ["train", *args, *QUIET])


def _finished(result, workdir) -> None:
    assert result.exit_code == 0, result.output
    _, runs = mlflow_runs(workdir / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert result.output.rstrip().splitlines()[-1] == f"run_id: {runs[0].info.run_id}"


def _rejected(result, workdir, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"
    assert not (workdir / "mlflow.db").exists(), "bad input must not create an MLflow run"


def _image_folder(root, per_class: int = 10):
    rng = np.random.default_rng(0)
    for label, name in enumerate(("circle", "square")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
            pixels[2:6, 2 + label : 6 - label] = 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_blobs_trains(workdir):
    _finished(_train("data=blobs", "trainer.max_epochs=1"), workdir)


def test_image_folder_trains_a_cnn(workdir):
    _image_folder(workdir / "shapes")
    result = _train("data=image_folder", "data.path=shapes", "model=cnn", "augment=basic", "trainer.max_epochs=1",
                    "tracking.log_model=false")
    _finished(result, workdir)


def test_bad_image_folder_exits_2_without_traceback(workdir):
    _image_folder(workdir / "shapes")
    (workdir / "shapes" / "square" / "0.png").write_bytes(b"not a png")
    result = _train("data=image_folder", "data.path=shapes", "model=cnn", "trainer.max_epochs=1")
    _rejected(result, workdir, "cannot read image", "0.png")


def test_image_augmentation_on_tabular_data_exits_2_before_any_run(workdir):
    _rejected(_train("data=iris", "augment=flip", "trainer.max_epochs=1"), workdir,
              "augment=flip transforms images", "(4,)", "augment=noise")


def test_augmentation_reaches_the_training_loader_only(workdir, monkeypatch):
    import dlrun.data.loader as loader_module

    built = []

    class RecordingLoader(loader_module.BatchLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(loader_module, "BatchLoader", RecordingLoader)
    result = _train("data=sine", "data.length=200", "augment=noise", "trainer.max_epochs=1", "tracking.log_model=false")
    _finished(result, workdir)
    assert [(loader.shuffle, loader.augment is not None) for loader in built] == [(True, True), (False, False), (False, False)]


def test_synthetic_data_take_the_runs_seed_unless_fixed(workdir):
    config = yaml.safe_load(runner.invoke(app, ["train", "--cfg", "data=spirals", "seed=5"]).output)
    assert config["data"]["seed"] == 5
    assert "depth" in config["model"], "synthetic tabular data default to the MLP"
    fixed = yaml.safe_load(runner.invoke(app, ["train", "--cfg", "data=spirals", "seed=5", "data.seed=1"]).output)
    assert fixed["data"]["seed"] == 1 and fixed["seed"] == 5


@pytest.mark.parametrize("args,fragments", [
    (["data=timeseries", "data.path=s.csv", "data.column=levl"], ["column 'levl' (data.column)", "Did you mean 'level'?"]),
    (["data=npz", "data.path=missing.npz"], ["no file at 'missing.npz'"]),
    (["data=blobs", "data.centers=1"], ["'data.centers' must be at least 2"]),
    (["data=scale"], ["unknown data option 'scale'"]),
])
def test_bad_data_options_exit_2(workdir, args, fragments):
    (workdir / "s.csv").write_text("level\n" + "".join(f"{i}\n" for i in range(100)))
    _rejected(_train(*args, "trainer.max_epochs=1"), workdir, *fragments)
