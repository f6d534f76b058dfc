"""bench/text_data.py: docstring summaries as texts, from installed packages (numpy only here: cheap)."""

from __future__ import annotations

from bench.text_data import collect, summary


def test_summary_is_the_first_paragraph_of_prose_without_library_names():
    doc = """absolute(x, /, out=None, *, where=True)

    Calculate the absolute value
    element-wise, as numpy does.

    Parameters
    ----------
    """
    assert summary(doc) == "Calculate the absolute value element-wise, as does."
    assert summary("Too short.") is None
    assert summary(None) is None and summary(property()) is None


def test_numpy_summaries_are_its_own_and_the_same_each_time():
    first, again = collect("numpy"), collect("numpy")
    assert first == again and len(first) > 300
    assert all(name.startswith("numpy") for name in first)
    assert not any("numpy" in text.lower().split() for text in first.values())
