"""A tiny generated text-classification CSV (reviews and their sentiment), for tests: no downloads."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["great", "lovely", "superb", "fun", "charming", "moving", "brilliant", "warm"]
NEGATIVE = ["dull", "awful", "boring", "clumsy", "weak", "tedious", "bland", "messy"]
NEUTRAL = ["the", "film", "plot", "was", "acting", "story", "and", "a", "really", "quite", "ending", "cast"]


def write_reviews(path: Path, rows: int = 100, seed: int = 0, column: str = "review", target: str = "label") -> Path:
    """A CSV of `rows` short reviews (3 to 10 words, some with a comma, so some fields are quoted) labelled
    pos or neg by which sentiment words they hold; balanced classes, the same file for the same seed."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([column, target])
        for row in range(rows):
            label = "pos" if row % 2 else "neg"
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 8))]
            for _ in range(rng.randint(1, 2)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
            text = " ".join(words).capitalize() + rng.choice([".", "!", ", honestly."])
            writer.writerow([text, label])
    return path
