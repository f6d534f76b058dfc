"""`text`: the user's CSV with a text column and a target column (text classification).

The file is decoded as UTF-8 strictly, before pandas reads it, so that a bad byte is
reported with its offset and line. Tokenizing waits for the split
(dlrun.data.text_prepare): the vocabulary is fitted on the training rows only.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Optional

import numpy as np

from dlrun.data.csv_checks import csv_delimiter
from dlrun.data.csv_file import check_column
from dlrun.data.raw import DATASETS, RawData, TextColumn, encode_labels
from dlrun.data.tokenizer import TOKEN_KINDS
from dlrun.errors import DataError
from dlrun.registry import Choice, Range

Tokens = Annotated[str, Choice(*TOKEN_KINDS)]
VocabSize = Annotated[Optional[int], Range(ge=1)]
MaxLength = Annotated[int, Range(ge=1)]


@DATASETS.register("text", "Your CSV of texts: data.path=FILE data.text=COLUMN data.target=COLUMN")
def text(path: str | None = None, text: str | None = None, target: str | None = None, tokens: Tokens = "word",
         vocab_size: VocabSize = 10000, lowercase: bool = True, max_length: MaxLength = 64,
         delimiter: str = ",") -> RawData:
    """Texts and their classes; the target's distinct values are the classes."""
    if not path:
        raise DataError("data=text needs the file: set data.path=FILE, data.text=COLUMN and data.target=COLUMN.")
    if not text or not target:
        key = "data.text" if not text else "data.target"
        raise DataError(f"data=text needs the {'text' if not text else 'target'} column: set {key}=COLUMN for {path}.")
    if text == target:
        raise DataError(f"data.text and data.target both name the column '{text}' of {path}; "
                        "the target is another column.")
    frame = _read(Path(path), csv_delimiter(delimiter))
    check_column(frame, text, path, "data.text")
    check_column(frame, target, path, "data.target")
    texts = frame[text]
    empty = np.flatnonzero(texts.isna().to_numpy() | (texts.fillna("").str.strip() == "").to_numpy())
    if len(empty):
        rows = ", ".join(str(row + 1) for row in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise DataError(f"{path}: the text column '{text}' is empty in data row{'s' if len(empty) > 1 else ''} {rows} "
                        f"(counting from 1 after the header; {len(empty)} in all). Fill or drop those rows.")
    labels = frame[target]
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0]) + 1
        raise DataError(f"{path}: the target column '{target}' is empty in data row {row} (counting from 1 after the "
                        "header); fill or drop those rows.")
    y, names = encode_labels(_label_values(labels))
    # one class is refused when a model is trained on it (text_prepare), not here: eval scores other data,
    # which may hold one class
    column = TextColumn(texts.tolist(), text, tokens, vocab_size, lowercase, max_length, path, target)
    return RawData(np.zeros((len(y), 0), dtype=np.float32), y, "classification", (max_length,), names, [text],
                   text=column)


def utf8_text(path: Path, setting: str) -> str:
    """The file's text, strictly UTF-8 (a leading BOM kept), or a DataError naming the byte, its line and
    `setting`, the option that named the file."""
    content = path.read_bytes()
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise DataError(f"{setting}: '{path}' is not UTF-8: byte {error.start} (line {line}) is "
                        f"{content[error.start:error.start + 1]!r}. Save the file as UTF-8 (for example "
                        f"`iconv -f latin1 -t utf-8 {path.name}`), or fix that line.") from None


def _read(path: Path, delimiter: str):
    """Every column as strings (only an empty field is missing: 'NA' is a text), or a DataError naming the file."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data.path: no file at '{path}' (from {Path.cwd()}). Give an existing CSV: data.path=FILE.")
    decoded = utf8_text(path, "data.path")
    if not decoded.strip():
        raise DataError(f"data.path: '{path}' is empty; it needs a header row and data rows.")
    try:
        frame = pd.read_csv(io.StringIO(decoded.removeprefix("\ufeff")), sep=delimiter, dtype=str,
                            keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as error:
        raise DataError(f"data.path: cannot read '{path}' as CSV: {str(error).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"data.path: '{path}' has a header but no data rows.")
    return frame


def _label_values(labels) -> list:
    """The target's values as numbers when every one is an integer (so 2 sorts before 10), else as text."""
    try:
        return [int(value) for value in labels]
    except ValueError:
        return [str(value).strip() for value in labels]
