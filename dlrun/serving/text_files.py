"""The layout of a text run's served model, without torch: what dlrun's checks of a stored model
compare a model's files with before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

LOADER_MODULE = "dlrun.serving.text_model"  # the installed module MLflow calls `_load_pyfunc` of
FOLDER = "text_model"  # the data folder's name; MLflow keeps it as data/text_model in the model
PROGRAM, TOKENIZER, META = "model.pt2", "tokenizer.json", "text_model.json"
FILES = tuple(sorted((META, PROGRAM, TOKENIZER)))  # all that the data folder holds, in listing order
META_FORMAT = 1


def read_meta(folder: Path) -> dict:
    """text_model.json (the text column, task and class names), checked to be one dlrun wrote; ValueError
    otherwise."""
    meta = json.loads((Path(folder) / META).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ValueError(f"{Path(folder) / META} is not a dlrun text model description of format {META_FORMAT}")
    missing = [key for key in ("text_column", "task", "class_names") if key not in meta]
    if missing:
        raise ValueError(f"{Path(folder) / META} lacks {', '.join(missing)}")
    return meta
