"""A run's train, validation and test splits as MLflow dataset inputs (the UI's Dataset column, the run page).

Each split is one dataset named after the data option (`iris`, `csv`), with the context MLflow's UI
shows beside it (training, validation, testing), a digest made from dlrun's fingerprint of the data as
loaded and the split's rows (another seed or other fractions make other datasets), the source it was
read from (the file or folder; a bundled or synthetic set by its name and options), a schema from the
feature names and shapes, and the number of rows as its profile. Nothing is copied or hashed again:
the fingerprint was taken when the data was loaded, and a split is known by its row indices. (MLflow's
own dataset classes would hash the data, or, for MetaDataset, store every schema as columns.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dlrun.data.raw import COMMON_KEYS

# dlrun's split names and the contexts MLflow's UI shows for them.
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
DIGEST_LENGTH = 16  # MLflow stores at most 36 characters; its own digests are 8 to 10
MAX_COLUMNS = 256  # wider data (images, long windows) is described by its shape, not a column each
CONTEXT_TAG = "mlflow.data.context"  # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT


def split_digest(fingerprint: str, split: str, rows: np.ndarray) -> str:
    """The digest of one split: the data's fingerprint, the split's name and its rows, hashed."""
    digest = hashlib.sha256(f"{fingerprint}:{split}:".encode())
    digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def dataset_inputs(data_cfg: dict, data) -> list:
    """The splits of `data` (a DataBundle) as MLflow DatasetInputs, one per split, for `log_inputs`.

    Args:
        data_cfg: the validated `data` config: its name, and the path or options the data was read with.
        data: the DataBundle the run trains on.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source, schema = _source(data_cfg), json.dumps(_schema(data_cfg, data))
    inputs = []
    for split, context in SPLIT_CONTEXTS.items():
        rows = data.split_rows[split]
        entity = Dataset(name=data_cfg["name"], digest=split_digest(data.fingerprint, split, rows),
                         source_type=source._get_source_type(), source=source.to_json(), schema=schema,
                         profile=json.dumps({"num_rows": int(len(rows)), "task": data.task}))
        inputs.append(DatasetInput(dataset=entity, tags=[InputTag(CONTEXT_TAG, context)]))
    return inputs


def recorded_digests(run) -> dict[str, str]:
    """context -> digest of the datasets an MLflow run (a `mlflow.entities.Run`) logged; {} for a run without."""
    found = {}
    for dataset_input in (run.inputs.dataset_inputs if run.inputs else []):
        context = next((tag.value for tag in dataset_input.tags if tag.key == CONTEXT_TAG), None)
        if context in SPLIT_CONTEXTS.values():
            found[context] = dataset_input.dataset.digest
    return found


def _source(data_cfg: dict):
    """Where the data came from: the file or folder it was read from; else (a bundled or synthetic set, a
    plugin's source) its name and options, as a code source, which MLflow shows without a link."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    if data_cfg.get("path"):
        path = str(Path(data_cfg["path"]).expanduser().resolve())
        return get_dataset_source_from_json(json.dumps({"uri": path}), source_type="local")
    options = {key: str(value) for key, value in data_cfg.items() if key not in COMMON_KEYS}
    return CodeDatasetSource(tags={"dlrun.data": data_cfg["name"], **options})


def _schema(data_cfg: dict, data) -> dict:
    """The features and the target as MLflow's datasets store a schema: the text and the class column for
    text; one column each where the source names its features and they are few (as PandasDataset writes it; the target, the CSV's by its name,
    after them), else a tensor of the sample's shape and one of the target's (as NumpyDataset writes it)."""
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    targets = 1 if data.y_train.ndim == 1 else int(data.y_train.shape[1])
    classification = data.task == "classification"
    if data.text_column:  # text: the CSV's text column (strings) and its class column
        integers = all(_is_integer(name) for name in data.class_names)  # as data=text reads the labels
        label = DataType.long if integers else DataType.string
        columns = [ColSpec(DataType.string, data.text_column), ColSpec(label, str(data_cfg["target"]))]
        return {"mlflow_colspec": Schema(columns).to_dict()}
    names = data.feature_names
    if names and len(names) <= MAX_COLUMNS and tuple(data.sample_shape) == (len(names),):
        target = str(data_cfg.get("target") or "target")
        target_names = [target] if targets == 1 else [f"{target}[{i}]" for i in range(targets)]
        kind = DataType.long if classification else DataType.float
        columns = [ColSpec(DataType.float, name) for name in names] + [ColSpec(kind, name) for name in target_names]
        return {"mlflow_colspec": Schema(columns).to_dict()}
    target_shape = (-1,) if targets == 1 and classification else (-1, targets)
    return TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype(np.float32), (-1, *data.sample_shape), "features")]),
        targets=Schema([TensorSpec(np.dtype(np.int64 if classification else np.float32), target_shape, "target")]),
    ).to_dict()


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
