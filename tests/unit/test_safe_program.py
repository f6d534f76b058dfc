"""A torch.export program is checked before it loads: every way an altered archive makes torch.export.load
(or the program it returns) run code is refused, and a program as torch.export.save writes it passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlrun.errors import ConfigError
from dlrun.serving.safe_program import refuse_pickled_program
from tests.tampered_program import tamper

WAYS = ["sample-inputs", "pickled-weight", "opaque-constant", "expression", "target", "compiled", "duplicate"]


class Ids(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(ids).mean(1)).softmax(-1)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """A program on int64 ids with a dynamic batch (so its graph holds symbolic expressions)."""
    path = tmp_path_factory.mktemp("program") / "model.pt2"
    ids = torch.zeros(3, 5, dtype=torch.long)
    torch.export.save(torch.export.export(Ids().eval(), (ids,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(path))
    return path


def test_a_program_as_torch_writes_it_passes_and_loads(program):
    refuse_pickled_program(program, "the test model")
    assert torch.export.load(str(program)).module()(torch.ones(7, 5, dtype=torch.long)).shape == (7, 2)


@pytest.mark.parametrize("how", WAYS)
def test_an_altered_program_is_refused_before_anything_runs(program, tmp_path, how):
    marker, altered = tmp_path / "PWNED", tmp_path / "model.pt2"
    tamper(program, altered, how, marker)
    with pytest.raises(ConfigError, match="the program model.pt2 of the test model is refused") as refused:
        refuse_pickled_program(altered, "the test model")
    assert "altered or not written by dlrun" in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["sample-inputs", "expression"])
def test_the_threat_is_real_torch_runs_the_altered_program(program, tmp_path, how):
    """Without the check, torch.export.load itself runs the command (its pickle fallback; sympy's eval)."""
    marker, altered = tmp_path / "PWNED", tmp_path / "model.pt2"
    tamper(program, altered, how, marker)
    try:
        torch.export.load(str(altered))
    except Exception:  # what loads after the command ran may not fit; the command has run
        pass
    assert marker.exists()


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a zip archive"):
        refuse_pickled_program(tmp_path / "model.pt2", "the test model")
