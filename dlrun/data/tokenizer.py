"""Text -> token ids: a word- or character-level vocabulary fitted on training texts.

The tokenizer is plain data (its vocabulary and four options), so a served text
model carries it as JSON and loading it runs no code from the model's folder.
No torch here: config validation and the served model's loader import it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1: padding, and any token not in the vocabulary
TOKEN_KINDS = ("word", "char")
FORMAT = 1  # the version of to_dict's layout

# A word is a run of letters, digits or underscores; each other non-space character
# (punctuation, an emoji) is a token of its own, so "good!" and "good" share "good".
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Tokenizer:
    """A fitted vocabulary and how texts are cut into its tokens.

    Attributes:
        tokens: "word" (words and punctuation marks) or "char" (every character, spaces included).
        lowercase: texts are lowercased before they are cut.
        max_length: every encoded text has exactly this many ids (truncated, or right-padded with 0).
        vocab: the token of each id: vocab[0] is PAD, vocab[1] UNK, then the training tokens by
            descending frequency, ties in code-point order.
        normalization: the Unicode normal form texts are brought to first ("NFC": a decomposed "café"
            is the composed one), or None for none (a tokenizer saved before it was recorded).
    """

    tokens: str
    lowercase: bool
    max_length: int
    vocab: list[str]
    normalization: str | None = "NFC"

    def __post_init__(self) -> None:
        if self.tokens not in TOKEN_KINDS:
            raise ValueError(f"tokens must be one of {', '.join(TOKEN_KINDS)}, not {self.tokens!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {self.max_length}")
        if self.vocab[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r} and {UNK!r}")
        if self.normalization not in (None, "NFC", "NFD", "NFKC", "NFKD"):
            raise ValueError(f"normalization must be a Unicode normal form or None, not {self.normalization!r}")
        self._ids = {token: i for i, token in enumerate(self.vocab)}

    @classmethod
    def fit(cls, texts: Sequence[str], tokens: str, vocab_size: int | None, lowercase: bool,
            max_length: int) -> "Tokenizer":
        """A tokenizer whose vocabulary is the most frequent tokens of `texts`.

        Args:
            texts: the training texts (only these: validation and test texts stay unseen).
            tokens: "word" or "char".
            vocab_size: how many distinct training tokens to keep (PAD and UNK come on top);
                None keeps them all.
            lowercase: lowercase texts before cutting them.
            max_length: the number of ids per encoded text.

        Returns:
            The tokenizer; its vocabulary is just [PAD, UNK] when the texts hold no token.
        """
        probe = cls(tokens, lowercase, max_length, [PAD, UNK])
        counts = Counter(token for text in texts for token in probe.split(text))
        ranked = sorted(counts, key=lambda token: (-counts[token], token))
        kept = ranked if vocab_size is None else ranked[:vocab_size]
        return cls(tokens, lowercase, max_length, [PAD, UNK, *kept])

    def split(self, text: str) -> list[str]:
        """The tokens of one text, before they are looked up."""
        if self.normalization:  # the same letters typed or stored another way are the same tokens
            text = unicodedata.normalize(self.normalization, text)
        if self.lowercase:
            text = text.lower()
        return _WORD.findall(text) if self.tokens == "word" else list(text)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """Token ids, int64 (N, max_length): truncated, right-padded with 0 (PAD).

        A text with no token at all (empty, or only spaces in word mode) becomes one UNK,
        so every row has at least one id that is not padding and masked pooling or
        attention over it is defined.
        """
        texts = list(texts)
        ids = np.zeros((len(texts), self.max_length), dtype=np.int64)
        unknown = self._ids[UNK]
        for row, text in enumerate(texts):
            found = [self._ids.get(token, unknown) for token in self.split(text)[: self.max_length]]
            ids[row, : len(found) or 1] = found or [unknown]
        return ids

    def to_dict(self) -> dict:
        """The tokenizer as JSON-able data (what from_dict reads back)."""
        return {"format": FORMAT, "tokens": self.tokens, "lowercase": self.lowercase,
                "max_length": self.max_length, "normalization": self.normalization, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        """The tokenizer that to_dict wrote; ValueError when `data` is not one. One written before
        `normalization` was recorded normalizes nothing, as it did then."""
        if data.get("format") != FORMAT:
            raise ValueError(f"not a dlrun tokenizer of format {FORMAT} (format: {data.get('format')!r})")
        missing = [key for key in ("tokens", "lowercase", "max_length", "vocab") if key not in data]
        if missing:
            raise ValueError(f"a tokenizer without {', '.join(missing)}")
        normalization = data.get("normalization")
        return cls(str(data["tokens"]), bool(data["lowercase"]), int(data["max_length"]),
                   [str(token) for token in data["vocab"]], None if normalization is None else str(normalization))
