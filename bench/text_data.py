"""A text classification set from text that ships inside installed packages: the first paragraph of
the docstrings of numpy, pandas, scikit-learn, scipy and torch, labelled by the library.

    python -m bench.text_data docstrings.csv          # columns: text, library

No downloads: the texts are read from the installed packages (their versions are in the file's
companion summary, see `describe`). The same installed versions give the same file: objects are
visited in sorted order, each library's rows are chosen by a hash of their qualified names, and
the rows are ordered by a hash of their text. The libraries' own names (numpy, np, torch, ...)
are taken out of the texts, so that a model learns from how each library describes things.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import inspect
import re
import warnings
from importlib.metadata import version
from pathlib import Path

# library -> (distribution name, the public modules whose members are read)
LIBRARIES = {
    "numpy": ("numpy", ["numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma", "numpy.polynomial",
                        "numpy.lib", "numpy.testing", "numpy.char", "numpy.strings"]),
    "pandas": ("pandas", ["pandas", "pandas.api.types", "pandas.api.extensions", "pandas.plotting",
                          "pandas.tseries.offsets", "pandas.errors", "pandas.io.formats.style"]),
    "sklearn": ("scikit-learn", ["sklearn." + name for name in (
        "base calibration cluster compose covariance cross_decomposition datasets decomposition "
        "discriminant_analysis dummy ensemble feature_extraction feature_selection gaussian_process impute "
        "inspection isotonic kernel_approximation kernel_ridge linear_model manifold metrics mixture "
        "model_selection multiclass multioutput naive_bayes neighbors neural_network pipeline preprocessing "
        "random_projection semi_supervised svm tree utils").split()]),
    "scipy": ("scipy", ["scipy." + name for name in (
        "cluster constants fft integrate interpolate io linalg ndimage odr optimize signal sparse spatial "
        "special stats").split()]),
    "torch": ("torch", ["torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.fft",
                        "torch.distributions", "torch.optim", "torch.utils.data", "torch.special",
                        "torch.autograd", "torch.sparse"]),
}
ROWS_PER_LIBRARY = 700
MIN_WORDS, MAX_WORDS = 4, 60
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")  # "absolute(x, /, out=None, ...)": a signature, not prose
_NAMES = re.compile(r"\b(numpy|np|pandas|pd|sklearn|scikit-learn|scipy|torch)\b", re.IGNORECASE)


def summary(doc: str | None) -> str | None:
    """The first paragraph of prose of a docstring, its whitespace collapsed and the libraries' names
    taken out, at most MAX_WORDS words; None when it has fewer than MIN_WORDS."""
    if not isinstance(doc, str):  # none, or a class whose __doc__ is a descriptor
        return None
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        text = " ".join(paragraph.split())
        if not text or _SIGNATURE.match(text):
            continue
        words = " ".join(_NAMES.sub("", text).split()).split()
        return " ".join(words[:MAX_WORDS]) if len(words) >= MIN_WORDS else None
    return None


def _members(owner, prefix: str, package: str, into: dict[str, str], in_class: bool = False) -> None:
    """Docstring summaries of owner's public functions and classes defined in package (and of each
    class's own methods and properties, one level down), by qualified name."""
    names = sorted(vars(owner)) if in_class else sorted(dir(owner))
    for name in names:
        if name.startswith("_"):
            continue
        try:
            member = getattr(owner, name)
        except Exception:  # a lazy attribute that fails to import: not text this set needs
            continue
        if not in_class and not str(getattr(member, "__module__", "") or "").startswith(package):
            continue  # an import from elsewhere (typing, the standard library)
        if not (callable(member) or isinstance(member, property)):
            continue
        qualified = f"{prefix}.{name}"
        text = summary(getattr(member, "__doc__", None))
        if text:
            into.setdefault(qualified, text)
        if inspect.isclass(member) and not in_class:
            _members(member, qualified, package, into, in_class=True)


def collect(library: str) -> dict[str, str]:
    """Every summary of one library, by qualified name."""
    _, modules = LIBRARIES[library]
    found: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated attributes warn as they are read
        for module_name in modules:
            _members(importlib.import_module(module_name), module_name, library, found)
    return found


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_rows(rows_per_library: int = ROWS_PER_LIBRARY) -> list[tuple[str, str]]:
    """(text, library) rows: each library's distinct summaries, less those that another library shares
    (inherited from the standard library, or copied), up to rows_per_library each."""
    by_library = {library: collect(library) for library in LIBRARIES}
    owners: dict[str, set[str]] = {}
    for library, found in by_library.items():
        for text in found.values():
            owners.setdefault(text, set()).add(library)
    rows = []
    for library, found in by_library.items():
        first_name = {}
        for qualified in sorted(found):
            first_name.setdefault(found[qualified], qualified)
        texts = [text for text in first_name if len(owners[text]) == 1]
        texts.sort(key=lambda text: _digest(first_name[text]))
        rows += [(text, library) for text in texts[:rows_per_library]]
    return sorted(rows, key=lambda row: _digest(row[0]))


def describe() -> str:
    """Where the texts come from, with the installed versions, for QUALITY.md."""
    versions = ", ".join(f"{distribution} {version(distribution)}" for distribution, _ in LIBRARIES.values())
    return (f"the first paragraph of prose of the public docstrings of {versions} (read from the installed "
            f"packages by bench/text_data.py, at most {ROWS_PER_LIBRARY} per library, the libraries' own names "
            "taken out), labelled by the library")


def write_csv(path: Path, rows_per_library: int = ROWS_PER_LIBRARY) -> int:
    """Write the set to path (columns text, library); the number of rows."""
    rows = build_rows(rows_per_library)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "library"])
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the CSV to write")
    parser.add_argument("--rows-per-library", type=int, default=ROWS_PER_LIBRARY)
    args = parser.parse_args()
    count = write_csv(Path(args.output), args.rows_per_library)
    print(f"wrote {count} rows to {args.output}: {describe()}")


if __name__ == "__main__":
    main()
