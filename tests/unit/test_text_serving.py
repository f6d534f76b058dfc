"""The served model of a text run: a pyfunc model that MLflow loads through dlrun.serving.text_model,
from a folder of data only, and that takes raw strings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dlrun.data.tokenizer import Tokenizer
from dlrun.errors import DataError
from dlrun.models.modules import Probabilities, ServingModel
from dlrun.serving.text_files import FILES, FOLDER, LOADER_MODULE
from dlrun.serving.text_logging import save_text_model
from dlrun.serving.text_model import TextModel, TextServing

TEXTS = ["the cat sat", "a dog ran far", "cats and dogs", "nothing here", "the dog sat"]


class MeanOfEmbeddings(nn.Module):
    """Embeddings averaged over the tokens that are not padding, then a linear layer: a net defined
    here only, so that a process which loads the saved model cannot import it."""

    def __init__(self, vocab: int, classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 6, padding_idx=0)
        self.out = nn.Linear(6, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(-1).float()
        return self.out((self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A three-class text model saved as dlrun saves one when the store refuses it; (folder, module)."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.fit(TEXTS, tokens="word", vocab_size=None, lowercase=True, max_length=5)
    serving = TextServing(tokenizer, "review", "classification", ["bad", "good", "neutral"])
    module = ServingModel(nn.Identity(), MeanOfEmbeddings(len(tokenizer.vocab), 3), Probabilities()).eval()
    folder = tmp_path_factory.mktemp("text") / "model"
    save_text_model(module, serving, TEXTS[:3], ["torch", "mlflow", "numpy"], folder)
    return folder, TextModel(module, serving).eval()


def expected(reference: TextModel, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return reference(texts).numpy()


def test_model_folder_holds_data_and_names_dlrun_loader(saved):
    import yaml

    folder, _ = saved
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == LOADER_MODULE and not flavor.get("code")
    assert flavor["data"] == f"data/{FOLDER}"
    assert sorted(p.name for p in (folder / "data" / FOLDER).iterdir()) == list(FILES)
    assert not list(folder.rglob("*.py")) and not list(folder.rglob("*.pkl"))
    meta = json.loads((folder / "data" / FOLDER / "text_model.json").read_text())
    assert meta["text_column"] == "review" and meta["class_names"] == ["bad", "good", "neutral"]


def test_signature_takes_strings_and_gives_probabilities(saved):
    from mlflow.models import Model

    signature = Model.load(str(saved[0])).signature
    assert [spec.type.name for spec in signature.inputs.inputs] == ["string"]
    assert signature.outputs.inputs[0].shape == (-1, 3)


@pytest.mark.parametrize("given", [
    lambda t: t,
    lambda t: pd.Series(t),
    lambda t: pd.Series(t, name="review"),
    lambda t: np.array(t),
    lambda t: pd.DataFrame({"review": t}),
    lambda t: pd.DataFrame({"review": t, "stars": range(len(t))}),  # other columns ignored
], ids=["list", "series", "named-series", "array", "frame", "frame-extra-column"])
def test_pyfunc_predicts_probabilities_on_raw_strings(saved, given):
    import mlflow.pyfunc

    folder, reference = saved
    texts = ["the cat ran", "dogs and cats sat here", "an unseen word", ""]
    got = mlflow.pyfunc.load_model(str(folder)).predict(given(texts))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (4, 3)
    np.testing.assert_allclose(got, expected(reference, texts), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_text_column_found_by_name_when_not_first(saved):
    folder, reference = saved
    from dlrun.serving.text_model import load_text_model

    model = load_text_model(folder / "data" / FOLDER)  # the raw model: MLflow's check would take the first column
    frame = pd.DataFrame({"title": ["x", "y"], "review": ["the cat", "a dog"]})
    np.testing.assert_allclose(model.predict(frame), expected(reference, ["the cat", "a dog"]), rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_named(saved):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(saved[0]))
    with pytest.raises(DataError, match="no text column 'review'.*Did you mean 'reveiw'"):
        model.predict(pd.DataFrame({"reveiw": ["the cat"]}))
    with pytest.raises(DataError, match="no texts"):
        model.get_raw_model().predict([])
    with pytest.raises(DataError, match=r"row 1 of the text column 'review' is 3 \(int\)"):
        model.get_raw_model().predict(["a", 3])


def test_loads_in_a_fresh_process_without_the_net_class(saved):
    """A process that never imported this test module (where the net's class lives) loads the model and
    gives the same probabilities: the folder is data, and the loader dlrun's installed module."""
    folder, reference = saved
    texts = ["the cat ran", "a dog"]
    script = ("import json, sys, mlflow.pyfunc; m = mlflow.pyfunc.load_model(sys.argv[1]); "
              "print(json.dumps(m.predict(json.loads(sys.argv[2])).tolist()))")
    done = subprocess.run([sys.executable, "-c", script, str(folder), json.dumps(texts)], capture_output=True,
                          text=True, timeout=300, cwd=Path(folder).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected(reference, texts), rtol=1e-5, atol=1e-6)


def test_with_the_server_gone_a_text_model_is_saved_in_the_runs_folder(saved, tmp_path):
    """RunRecord.log_model's local fallback keeps the text model's kind: dlrun's loader and its data folder."""
    import mlflow.pyfunc

    from dlrun.tracking.record import RunRecord

    _, reference = saved
    record = RunRecord(f"sqlite:///{tmp_path / 'mlflow.db'}", "dlrun", output_dir=tmp_path / "outputs")
    record.create("offline", {}, {}, source="dlrun train")
    record.buffer.go_offline(ConnectionError("refused"))
    local = record.log_model(reference.ids_model, TEXTS[:3], ["torch"], text=reference.serving)
    assert local == str(record.local_dir / "model")
    assert sorted(p.name for p in (Path(local) / "data" / FOLDER).iterdir()) == list(FILES)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(local).predict(["the cat"]), expected(reference, ["the cat"]),
                               rtol=1e-5, atol=1e-6)
    assert "the model in" in record.note()
