"""The DataBundle of text data: a tokenizer fitted on the training texts, every split as token ids.

The model reads int64 ids (N, max_length) and embeds them itself, so `preprocess` is an
identity: the served model of a text run tokenizes first (with the tokenizer this bundle
carries) and then runs on ids.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dlrun.data.raw import RawData
from dlrun.data.tokenizer import PAD, UNK, Tokenizer
from dlrun.errors import DataError

EXAMPLE_ROWS = 5  # training rows kept for the served model's input example


def text_bundle_fields(raw: RawData, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict:
    """DataBundle's fields for text data (raw.text set), from the seeded split's rows.

    Args:
        raw: what data=text loaded: the texts with their tokenizer options, and the class indices.
        train, val, test: each split's rows, sorted.

    Returns:
        The keyword arguments of dlrun.data.prepare.DataBundle.
    """
    import torch
    from torch import nn

    from dlrun.models.modules import Probabilities

    column = raw.text
    if len(raw.class_names) < 2:  # checked here, where a model is trained; eval on other data may score one class
        raise DataError(f"{column.source}: the target '{column.target}' has a single class ({raw.class_names[0]!r}); "
                        "classification needs two or more to train.")
    texts = column.texts
    tokenizer = Tokenizer.fit([texts[i] for i in train], column.tokens, column.vocab_size, column.lowercase,
                              column.max_length)
    if tokenizer.vocab == [PAD, UNK]:  # a guard: data=text refuses empty texts, and any other text has a token
        raise DataError(f"the {len(train)} training texts of column '{column.column}' hold no token "
                        f"(data.tokens={column.tokens}), so the vocabulary is empty. Check data.text names the "
                        "column of texts.")
    ids = torch.from_numpy(tokenizer.encode(texts))
    y = torch.as_tensor(raw.y, dtype=torch.long)
    index = {name: torch.as_tensor(rows, dtype=torch.long)
             for name, rows in (("train", train), ("val", val), ("test", test))}
    return dict(
        x_train=ids[index["train"]], y_train=y[index["train"]],
        x_val=ids[index["val"]], y_val=y[index["val"]],
        x_test=ids[index["test"]], y_test=y[index["test"]],
        task="classification", num_classes=len(raw.class_names), class_names=list(raw.class_names),
        sample_shape=(column.max_length,), preprocess=nn.Identity().eval(), postprocess=Probabilities().eval(),
        raw_example=ids[index["train"][:EXAMPLE_ROWS]].numpy().copy(), fingerprint=text_fingerprint(raw),
        split_rows={"train": train, "val": val, "test": test},
        tokenizer=tokenizer, text_column=column.column, text_example=[texts[i] for i in train[:EXAMPLE_ROWS]],
    )


def text_fingerprint(raw: RawData) -> str:
    """A hash of the texts (each length-prefixed, so no two lists of texts collide) and the targets."""
    digest = hashlib.sha256(b"text\0")
    for text in raw.text.texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    y = np.ascontiguousarray(raw.y)
    digest.update(str(y.dtype).encode() + str(y.shape).encode() + y.tobytes())
    digest.update(raw.task.encode() + "\0".join(raw.class_names).encode())
    return digest.hexdigest()
