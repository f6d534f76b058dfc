"""Writing a text run's served model: the data folder (pt2 program, tokenizer.json, text_model.json)
and the MLflow pyfunc model around it, logged to a run or saved in a local folder.

The program is `torch.export` of ServingModel on int64 token ids with a dynamic batch dimension; the
pyfunc model names dlrun.serving.text_model as its loader and carries no code.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from dlrun.serving.text_files import FOLDER, LOADER_MODULE, META, PROGRAM, TOKENIZER
from dlrun.serving.text_model import TextServing


def write_data_folder(model, serving: TextServing, examples: list[str], folder: Path) -> Path:
    """The model's data folder `folder / FOLDER`: the exported program, tokenizer.json and text_model.json.

    Args:
        model: ServingModel on token ids (preprocess, net, postprocess), in eval mode.
        serving: the tokenizer, text column and task.
        examples: a few training texts: the program is traced on their ids.
    """
    import torch

    data = Path(folder) / FOLDER
    data.mkdir(parents=True)
    ids = serving.tokenizer.encode(_two_or_more(examples))
    with warnings.catch_warnings():  # an LSTM's weight list is set while traced; the program holds its values
        warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned during export")
        program = torch.export.export(model, (torch.from_numpy(ids),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(data / PROGRAM))
    (data / TOKENIZER).write_text(json.dumps(serving.tokenizer.to_dict()), encoding="utf-8")
    (data / META).write_text(json.dumps(serving.meta(), indent=2), encoding="utf-8")
    return data


def signature(model, serving: TextServing, examples: list[str]):
    """One string per row in (unnamed, so that a list, a Series or a DataFrame's text column all pass
    MLflow's schema check), float32 (N, outputs) out."""
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    with torch.no_grad():
        width = model(torch.from_numpy(serving.tokenizer.encode(examples[:1]))).shape[-1]
    return ModelSignature(inputs=Schema([ColSpec("string")]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(width)))]))


def log_text_model(model, serving: TextServing, examples: list[str], requirements: list[str]):
    """The pyfunc model named 'model' in the active MLflow run; MLflow's ModelInfo."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="dlrun-text-model-") as scratch:
        return mlflow.pyfunc.log_model(name="model", **_arguments(model, serving, examples, requirements, scratch))


def save_text_model(model, serving: TextServing, examples: list[str], requirements: list[str], path: Path) -> None:
    """The same pyfunc model saved in the local folder `path` (which must not exist)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="dlrun-text-model-") as scratch:
        mlflow.pyfunc.save_model(str(path), **_arguments(model, serving, examples, requirements, scratch))


def _arguments(model, serving: TextServing, examples: list[str], requirements: list[str], scratch: str) -> dict:
    examples = list(examples)
    return {"loader_module": LOADER_MODULE, "data_path": str(write_data_folder(model, serving, examples, Path(scratch))),
            "input_example": examples, "signature": signature(model, serving, examples),
            "pip_requirements": requirements, "metadata": {"dlrun.text_column": serving.text_column}}


def _two_or_more(texts: list[str]) -> list[str]:
    """torch.export fixes a dimension of size 1, so the batch it traces has two rows at least."""
    texts = list(texts) or [""]
    return texts if len(texts) > 1 else texts * 2
