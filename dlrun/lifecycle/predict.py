"""`dlrun predict`: a run's logged model applied to a CSV or .npy file of raw features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.errors import DataError
from dlrun.lifecycle.stored import check_feature_count, load_run


def predict(run_id: str, input_path: str, output_path: str, uri: str | None = None) -> int:
    """Write the run's predictions for the rows of input_path to output_path (CSV); the row count."""
    import pandas as pd

    stored = load_run(run_id, uri)
    features = read_features(Path(input_path), stored.config)
    model = stored.served_model()
    check_feature_count(model, features, input_path, run_id)
    info = stored.data_info()
    outputs = np.asarray(model.predict(features))
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

    A CSV may still hold the run's target column (data.target of a csv run); it is dropped.
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
            frame = pd.read_csv(path)
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


def _is_number(text) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True
