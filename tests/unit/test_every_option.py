"""Every shipped option of every group works in a one-epoch run: a broken default cannot land.

Each option (as `dlrun configs` lists them) is composed, validated and prepared in
process as `dlrun train GROUP=OPTION trainer.max_epochs=1` would: data loaded and
split, model and loss built, the optimizer and schedule built once. Nothing trains
and nothing is recorded.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dlrun.config.compose import compose
from dlrun.config.paths import PACKAGE_CONF, group_options
from dlrun.config.validate import validate
from dlrun.training.setup import prepare
from tests.text_data import write_reviews

OPTIONS = [(group, option) for group, options in sorted(group_options([PACKAGE_CONF]).items()) for option in options]

# What an option needs beyond its defaults: the user's own files, a task its loss fits,
# or less data than it draws by default (kept small so that the whole file runs in seconds).
NEEDS = {
    ("data", "csv"): lambda files: [f"data.path={files['csv']}", "data.target=label"],
    ("data", "npz"): lambda files: [f"data.path={files['npz']}"],
    ("data", "image_folder"): lambda files: [f"data.path={files['images']}"],
    ("data", "timeseries"): lambda files: [f"data.path={files['series']}", "data.column=value"],
    ("data", "blobs"): lambda files: ["data.n_samples=60"],
    ("data", "spirals"): lambda files: ["data.n_samples=60"],
    ("data", "sine"): lambda files: ["data.length=120"],
    ("loss", "bce"): lambda files: ["data=breast_cancer"],  # one logit: a two-class task
    ("data", "text"): lambda files: _text(files),
    ("model", "text_lstm"): lambda files: ["data=text", *_text(files)],  # token ids: text data
    ("model", "text_transformer"): lambda files: ["data=text", *_text(files)],
    ("model", "text_bag"): lambda files: ["data=text", *_text(files)],
}


def _text(files: dict[str, str]) -> list[str]:
    return [f"data.path={files['text']}", "data.text=review", "data.target=label"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Tiny stand-ins for the user's files that the csv, npz, image_folder and timeseries options read."""
    folder = tmp_path_factory.mktemp("user-data")
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=3)) + f",{i % 2}" for i in range(40)]
    (folder / "table.csv").write_text("a,b,c,label\n" + "\n".join(rows) + "\n")
    # (N, channels, height, width): images, which the default model (cnn) takes
    np.savez(folder / "arrays.npz", x=rng.normal(size=(40, 1, 8, 8)).astype(np.float32), y=np.arange(40) % 2)
    for label in ("cat", "dog"):
        (folder / "images" / label).mkdir(parents=True)
        for index in range(10):
            pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "images" / label / f"{index}.png")
    (folder / "series.csv").write_text("t,value\n" + "".join(f"{t},{np.sin(t / 5):.4f}\n" for t in range(200)))
    write_reviews(folder / "reviews.csv", rows=40)
    return {"csv": str(folder / "table.csv"), "npz": str(folder / "arrays.npz"), "images": str(folder / "images"),
            "series": str(folder / "series.csv"), "text": str(folder / "reviews.csv")}


def test_every_group_has_options_to_check():
    groups = {group for group, _ in OPTIONS}
    assert {"activation", "augment", "data", "loss", "model", "optim", "regularization", "scheduler",
            "trainer"} <= groups


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_a_shipped_option_composes_validates_and_prepares_for_one_epoch(workdir, files, group, option):
    needs = NEEDS.get((group, option), lambda files: [])(files)
    run = validate(compose([f"{group}={option}", "trainer.max_epochs=1", *needs]))
    assert run.choices[group] == option
    prepared = prepare(run)  # also builds the optimizer and the schedule once
    assert len(prepared.data.x_train) > 0
