"""Data sources, chosen by `data.name`: importing this module registers them all.

Each source module registers its builders in the one DATASETS registry
(dlrun.data.raw); this module is the single import that fills it:

- bundled: scikit-learn's bundled sets (digits, iris, wine, breast_cancer, diabetes)
- csv_file: csv; npz_file: npz; image_folder: image_folder; timeseries: timeseries; text: text
- synthetic: blobs, spirals, sine (no file; drawn from data.seed)

None of them imports torch, pandas or PIL at module level, so `dlrun configs` and
config validation stay fast. Nothing downloads.
"""

from __future__ import annotations

from dlrun.data import bundled, csv_file, image_folder, npz_file, synthetic, text, timeseries  # noqa: F401  (registers)
from dlrun.data.raw import COMMON_KEYS, DATASETS, RawData, encode_labels

__all__ = ["COMMON_KEYS", "DATASETS", "RawData", "encode_labels"]
