"""The tasks a loss fits are part of its registration: a loss without them cannot register."""

from __future__ import annotations

import pytest

from dlrun.components.losses import LOSSES, fits


def test_every_loss_registered_the_tasks_it_fits():
    assert {name: set(fits(name)) for name in LOSSES.names()} == {
        "auto": {"classification", "regression"},
        "cross_entropy": {"classification"}, "kl_div": {"classification"}, "hinge": {"classification"},
        "bce": {"binary"},
        "mse": {"classification", "regression"}, "mae": {"classification", "regression"},
        "huber": {"classification", "regression"},
    }


def test_a_loss_without_its_fit_cannot_register():
    with pytest.raises(TypeError, match=r"loss 'unfit' must be registered with fits=\.\.\.; missing: fits"):
        LOSSES.register("unfit", "no fit given")
    assert "unfit" not in LOSSES.names()


@pytest.mark.parametrize("bad", [set(), {"classifcation"}, {"regression", "images"}])
def test_a_fit_must_name_known_tasks(bad):
    with pytest.raises(TypeError, match="must name some of classification, regression, binary"):
        LOSSES.register("misfit", "a bad fit", fits=bad)
    assert "misfit" not in LOSSES.names()
