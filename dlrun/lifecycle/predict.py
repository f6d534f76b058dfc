"""`dlrun predict`: a run's logged model applied to a CSV or .npy file of raw features, or to a CSV's
text column for a text run."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dlrun.errors import DataError, did_you_mean
from dlrun.lifecycle.stored import check_feature_count, load_run


def predict(run_id: str, input_path: str, output_path: str, uri: str | None = None) -> int:
    """Write the run's predictions for the rows of input_path to output_path (CSV); the row count."""
    import pandas as pd

    stored = load_run(run_id, uri)
    info = stored.data_info()
    if info.get("text_column"):  # a text run: its served model reads raw texts from that column
        inputs = read_texts(Path(input_path), info["text_column"], run_delimiter(stored.config))
        model = stored.served_model()
    else:
        inputs = read_features(Path(input_path), stored.config)
        model = stored.served_model()
        check_feature_count(model, inputs, input_path, run_id)
    outputs = np.asarray(model.predict(inputs))
    if info["task"] == "classification":
        names = info["class_names"] or [str(i) for i in range(outputs.shape[1])]
        table = pd.DataFrame(outputs, columns=[f"prob_{name}" for name in names])
        table.insert(0, "predicted", [names[i] for i in outputs.argmax(axis=1)])
    else:
        values = outputs.reshape(len(outputs), -1)
        columns = ["prediction"] if values.shape[1] == 1 else [f"prediction_{i}" for i in range(values.shape[1])]
        table = pd.DataFrame(values, columns=columns)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_path, index=False)
    return len(table)


def read_features(path: Path, config: dict) -> np.ndarray:
    """Raw features as float32 (N, F) from a .npy array or a CSV with a header row.

    A CSV is read with the run's data.delimiter and may still hold the run's target column (data.target of
    a csv run); it is dropped.
    """
    if not path.is_file():
        raise DataError(f"--input: no file at '{path}'.")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise DataError(f"--input: cannot read '{path}' as a numeric .npy array: {error}") from None
        if array.ndim < 2:
            array = array.reshape(1, -1)
        features = array.reshape(len(array), -1)
    else:
        import pandas as pd

        try:
            frame = pd.read_csv(path, sep=run_delimiter(config))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise DataError(f"--input: cannot read '{path}' as CSV: {str(error).splitlines()[0]}") from None
        if all(_is_number(name) for name in frame.columns):
            raise DataError(f"--input: '{path}' has no header row (its first row holds numbers). Add a header "
                            "row with a name for each column, or pass a .npy array.")
        target = config.get("data", {}).get("target")
        if target and target in frame.columns:
            frame = frame.drop(columns=[target])
        text = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:
            raise DataError(f"--input: columns {', '.join(text)} of '{path}' are not numeric.")
        features = frame.to_numpy()
    if not np.issubdtype(features.dtype, np.number):
        raise DataError(f"--input: '{path}' does not hold numbers.")
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        raise DataError(f"--input: '{path}' holds empty, NaN or infinite values.")
    return features


def run_delimiter(config: dict) -> str:
    """The delimiter the run's CSV was read with (data.delimiter; a comma for data without one)."""
    from dlrun.data.csv_checks import csv_delimiter

    return csv_delimiter((config.get("data") or {}).get("delimiter", ","))


def read_texts(path: Path, column: str, delimiter: str = ",") -> list[str]:
    """The texts of a text run's input: the column `column` of a UTF-8 CSV with a header row, fields
    separated by `delimiter` (other columns, the target among them, are ignored), every row a text that is
    not empty."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"--input: no file at '{path}'.")
    if path.suffix == ".npy":
        raise DataError(f"--input: '{path}' is a .npy array; the run's model reads texts: give a CSV with a "
                        f"column '{column}', as in training.")
    from dlrun.data.text import utf8_text

    content = utf8_text(path, "--input").removeprefix("\ufeff")
    try:
        frame = pd.read_csv(io.StringIO(content), sep=delimiter, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"--input: cannot read '{path}' as CSV: {str(error).splitlines()[0]}") from None
    names = [str(name) for name in frame.columns]
    if column not in names:
        raise DataError(f"--input: '{path}' has no column '{column}', the text column the run trained on "
                        f"(its columns: {', '.join(names)}).{did_you_mean(column, names)}")
    texts = frame[column].tolist()
    if not texts:
        raise DataError(f"--input: '{path}' has a header row and no texts.")
    empty = [row for row, text in enumerate(texts, start=1) if not text.strip()]
    if empty:
        rows = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataError(f"--input: column '{column}' of '{path}' is empty in row {rows} (rows counted from 1 "
                        "after the header). Give every row a text, or drop the empty rows.")
    return texts


def _is_number(text) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True
