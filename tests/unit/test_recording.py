"""What a run records of its config: every value it trained with, also those a user's file left out."""

from __future__ import annotations

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.training.recording import recorded_config


def test_a_partial_option_file_is_recorded_whole_and_validates_again(tmp_path):
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "mine.yaml").write_text("name: adam\nlr: 0.5\n")
    run = validate(compose(["optim=mine", "data=iris"], str(tmp_path)))
    assert run.config["optim"] == {"name": "adam", "lr": 0.5}  # as --cfg prints it

    recorded = recorded_config(run)["optim"]
    assert recorded == {"name": "adam", "lr": 0.5, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0,
                        "amsgrad": False}
    assert run.config["optim"] == {"name": "adam", "lr": 0.5}  # the run's own config is left as it was


def test_a_shipped_option_is_recorded_as_its_file_says():
    run = validate(compose(["optim=sgd", "scheduler=step"], None))
    recorded = recorded_config(run)
    for group in ("optim", "scheduler", "loss", "activation", "augment"):
        assert {k: v for k, v in recorded[group].items() if k in run.config[group]} == run.config[group]
    assert recorded["optim"]["lr"] == 0.05
