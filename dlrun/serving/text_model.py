"""The served model of a text run: raw strings in, class probabilities (or values) out.

MLflow calls `_load_pyfunc(data_path)` of this installed module (the model's `loader_module`); the
folder at data_path holds data only: the torch.export program on token ids (`model.pt2`), the fitted
tokenizer (`tokenizer.json`) and what the run's data looked like (`text_model.json`: the text column,
the task, the class names). Nothing in the folder is imported or unpickled as code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from dlrun.data.tokenizer import Tokenizer
from dlrun.errors import DataError, did_you_mean
from dlrun.serving.safe_program import refuse_pickled_program
from dlrun.serving.text_files import LOADER_MODULE, META_FORMAT, PROGRAM, TOKENIZER, read_meta

BATCH = 512  # rows tokenized and run at a time, so a long input does not hold every id at once


@dataclass(frozen=True)
class TextServing:
    """What a text run's served model carries beside its program: how texts become ids, and what the
    outputs mean.

    Attributes:
        tokenizer: the tokenizer fitted on the training split.
        text_column: the CSV column the texts came from (data.text).
        task: "classification" or "regression".
        class_names: the classes in output order (classification), else [].
    """

    tokenizer: Tokenizer
    text_column: str
    task: str
    class_names: list[str]

    @classmethod
    def of(cls, data) -> "TextServing":
        """The served side of a text run's DataBundle."""
        return cls(data.tokenizer, data.text_column, data.task, list(data.class_names))

    def meta(self) -> dict:
        """The JSON of text_model.json."""
        return {"format": META_FORMAT, "text_column": self.text_column, "task": self.task,
                "class_names": self.class_names, "max_length": self.tokenizer.max_length}


class TextModel(nn.Module):
    """Raw strings -> the tokenizer's ids -> a module on ids (ServingModel, or its torch.export program).

    A torch module (`forward(texts)`, what `dlrun.load_model` returns for a text run) with the pyfunc
    `predict` MLflow calls.
    """

    def __init__(self, ids_model: nn.Module, serving: TextServing):
        """Args:
        ids_model: int64 ids (N, max_length) -> probabilities or values (N, outputs).
        serving: the tokenizer, text column and task.
        """
        super().__init__()
        self.ids_model = ids_model
        self.serving = serving

    def train(self, mode: bool = True) -> "TextModel":
        """A torch.export program on ids was traced in eval mode and keeps it (it refuses train());
        a ServingModel rebuilt from a checkpoint follows `mode`."""
        self.training = mode
        if not isinstance(self.ids_model, torch.fx.GraphModule):
            self.ids_model.train(mode)
        return self

    @property
    def tokenizer(self) -> Tokenizer:
        return self.serving.tokenizer

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Probabilities (N, classes) or values (N, targets) for N raw texts."""
        return self.ids_model(torch.from_numpy(self.tokenizer.encode(texts)))

    def predict(self, model_input: Any, params: dict | None = None) -> np.ndarray:
        """Class probabilities (N, classes) or values (N, targets), float32, for a list of strings, a
        pandas Series, a 1-D array, or a DataFrame holding the text column (other columns are ignored).

        Raises:
            DataError: no texts, a DataFrame without the text column, or a value that is not a string.
        """
        texts = self.texts_of(model_input)
        if not texts:
            raise DataError("the input holds no texts; give at least one.")
        with torch.no_grad():
            return np.concatenate([self(texts[start : start + BATCH]).numpy()
                                   for start in range(0, len(texts), BATCH)]).astype(np.float32, copy=False)

    def get_raw_model(self) -> "TextModel":
        """This module: what MLflow's PyFuncModel.get_raw_model() hands out (dlrun.load_model, export)."""
        return self

    def texts_of(self, model_input: Any) -> list[str]:
        """The texts in any input `predict` takes, checked to be strings."""
        import pandas as pd

        column = self.serving.text_column
        if isinstance(model_input, pd.DataFrame):
            names = [str(name) for name in model_input.columns]
            if column in names:
                values = model_input.iloc[:, names.index(column)]
            elif list(model_input.columns) == [0]:  # a list, Series or array that MLflow made into a DataFrame
                values = model_input.iloc[:, 0]
            else:
                raise DataError(f"the input has no text column '{column}' (its columns: {', '.join(names) or 'none'})."
                                f"{did_you_mean(column, names)} The model reads the texts from the column "
                                f"'{column}', as in training, or from a list of strings. Through "
                                "mlflow.pyfunc, a DataFrame's first column is all that reaches the model (its "
                                f"input is one unnamed string column): put '{column}' first.")
        elif isinstance(model_input, str):
            values = [model_input]
        elif isinstance(model_input, np.ndarray) and model_input.ndim != 1:
            raise DataError(f"the input is an array of shape {model_input.shape}; the model takes one text per row "
                            "(a 1-D array, a list of strings, or a DataFrame with the text column).")
        else:
            values = model_input
        texts = list(values)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"row {row} of the text column '{column}' is {text!r} ({type(text).__name__}), not "
                                "a string; give one text per row.")
        return texts


def text_model_of(served) -> TextModel | None:
    """The TextModel behind a run's served model (MLflow's pyfunc model, or a CheckpointModel rebuilt from
    best.ckpt); None for a model on features."""
    model = getattr(served, "model", None)
    if model is None and getattr(served, "loader_module", None) == LOADER_MODULE:
        model = served.get_raw_model()
    return model if isinstance(model, TextModel) else None


def load_text_model(folder: Path | str) -> TextModel:
    """The text model in a data folder written by dlrun.serving.text_logging (JSON and a pt2 program only)."""
    folder = Path(folder)
    meta = read_meta(folder)
    tokenizer = Tokenizer.from_dict(json.loads((folder / TOKENIZER).read_text(encoding="utf-8")))
    refuse_pickled_program(folder / PROGRAM, f"the text model in {folder}")  # torch.export.load may unpickle
    program = torch.export.load(str(folder / PROGRAM)).module()
    serving = TextServing(tokenizer, str(meta["text_column"]), str(meta["task"]),
                          [str(name) for name in meta["class_names"]])
    return TextModel(program, serving).eval()


def _load_pyfunc(data_path: str) -> TextModel:
    """MLflow's entry point for a model whose loader_module is this module."""
    return load_text_model(data_path)
