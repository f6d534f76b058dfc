"""Where config trees live: --config-dir, then ./conf, then the package's own.

Kept free of Hydra and torch so that `dlrun configs` starts fast.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

# The tree ships inside the installed package (dlrun/conf); in a source checkout it
# is the top-level conf/ beside the package.
PACKAGE_CONF = next(
    (p for p in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf") if (p / "train.yaml").is_file()),
    _PACKAGE_DIR / "conf",
)
PRIMARY = "train"


def config_roots(config_dir: str | Path | None = None) -> list[Path]:
    """Config folders in search order: the first that holds a file wins."""
    roots: list[Path] = []
    if config_dir is not None:
        roots.append(Path(config_dir).resolve())
    local = (Path.cwd() / "conf").resolve()
    if local.is_dir() and local != PACKAGE_CONF:
        roots.append(local)
    roots.append(PACKAGE_CONF)
    return roots


def group_options(roots: list[Path]) -> dict[str, dict[str, Path]]:
    """Every config group and its options: {group: {option: file}}, first root winning."""
    groups: dict[str, dict[str, Path]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            options = groups.setdefault(folder.name, {})
            for file in sorted(folder.glob("*.yaml")):
                options.setdefault(file.stem, file)
    return {g: o for g, o in groups.items() if o}


def describe(file: Path) -> str:
    """An option's one-line description: the first comment line of its YAML file."""
    for line in file.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return ""
