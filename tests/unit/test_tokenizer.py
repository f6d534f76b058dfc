"""Tokenizer: vocabulary order, encoding, truncation, padding and its JSON form."""

import json

import numpy as np
import pytest

from dlrun.data.tokenizer import PAD, UNK, Tokenizer

TEXTS = ["the cat sat", "The dog sat!", "a cat, a dog"]


def test_vocabulary_is_ordered_by_frequency_then_text():
    tokenizer = Tokenizer.fit(TEXTS, "word", None, lowercase=True, max_length=6)
    # a, cat, dog, sat, the: 2 each; then "!" and "," once each, in text order
    assert tokenizer.vocab == [PAD, UNK, "a", "cat", "dog", "sat", "the", "!", ","]


def test_vocab_size_keeps_the_most_frequent_tokens():
    tokenizer = Tokenizer.fit(TEXTS, "word", 3, lowercase=True, max_length=6)
    assert tokenizer.vocab == [PAD, UNK, "a", "cat", "dog"]
    assert tokenizer.encode(["the cat"]).tolist() == [[1, 3, 0, 0, 0, 0]]


def test_lowercase_false_keeps_case_apart():
    tokenizer = Tokenizer.fit(["The the"], "word", None, lowercase=False, max_length=2)
    assert tokenizer.vocab == [PAD, UNK, "The", "the"]
    assert tokenizer.encode(["THE the"]).tolist() == [[1, 3]]


def test_encode_truncates_and_pads_with_zero():
    tokenizer = Tokenizer.fit(TEXTS, "word", None, lowercase=True, max_length=3)
    ids = tokenizer.encode(["a cat sat on the mat", "dog"])
    assert ids.dtype == np.int64 and ids.shape == (2, 3)
    assert ids.tolist() == [[2, 3, 5], [4, 0, 0]]


def test_unknown_tokens_get_id_one():
    tokenizer = Tokenizer.fit(TEXTS, "word", None, lowercase=True, max_length=4)
    assert tokenizer.encode(["zebra cat quokka"]).tolist() == [[1, 3, 1, 0]]


def test_a_text_without_tokens_encodes_as_one_unknown():
    tokenizer = Tokenizer.fit(TEXTS, "word", None, lowercase=True, max_length=3)
    assert tokenizer.encode(["", "   "]).tolist() == [[1, 0, 0], [1, 0, 0]]


def test_characters_include_spaces():
    tokenizer = Tokenizer.fit(["ab a"], "char", None, lowercase=True, max_length=5)
    assert tokenizer.vocab == [PAD, UNK, "a", " ", "b"]
    assert tokenizer.encode(["Ba c"]).tolist() == [[4, 2, 3, 1, 0]]


def test_no_tokens_leaves_only_pad_and_unk():
    assert Tokenizer.fit(["", "  "], "word", None, lowercase=True, max_length=4).vocab == [PAD, UNK]


def test_round_trip_through_json():
    tokenizer = Tokenizer.fit(TEXTS, "char", 5, lowercase=False, max_length=7)
    again = Tokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert again == tokenizer
    assert np.array_equal(again.encode(TEXTS), tokenizer.encode(TEXTS))


@pytest.mark.parametrize("data", [
    {"tokens": "word", "lowercase": True, "max_length": 4, "vocab": [PAD, UNK]},  # no format
    {"format": 1, "tokens": "word", "lowercase": True, "vocab": [PAD, UNK]},  # no max_length
    {"format": 1, "tokens": "bpe", "lowercase": True, "max_length": 4, "vocab": [PAD, UNK]},
    {"format": 1, "tokens": "word", "lowercase": True, "max_length": 4, "vocab": ["a", PAD, UNK]},
])
def test_from_dict_refuses_what_is_not_a_tokenizer(data):
    with pytest.raises(ValueError):
        Tokenizer.from_dict(data)


@pytest.mark.parametrize("tokens", ["word", "char"])
def test_a_decomposed_text_encodes_as_the_composed_one_it_was_trained_on(tokens):
    import unicodedata

    composed = ["café crème", "naïve café"]
    tokenizer = Tokenizer.fit(composed, tokens, None, lowercase=True, max_length=12)
    decomposed = [unicodedata.normalize("NFD", text) for text in composed]
    assert decomposed != composed and tokenizer.to_dict()["normalization"] == "NFC"
    assert np.array_equal(tokenizer.encode(decomposed), tokenizer.encode(composed))
    assert UNK not in [tokenizer.vocab[i] for i in tokenizer.encode(decomposed).ravel()]


def test_a_tokenizer_saved_before_normalization_was_recorded_normalizes_nothing():
    import unicodedata

    old = {"format": 1, "tokens": "char", "lowercase": False, "max_length": 4, "vocab": [PAD, UNK, "é"]}
    tokenizer = Tokenizer.from_dict(old)
    assert tokenizer.normalization is None
    assert tokenizer.encode([unicodedata.normalize("NFD", "é")]).tolist() == [[1, 1, 0, 0]]  # as before: e, accent
