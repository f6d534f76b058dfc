"""Where installed plugins keep their config trees, remembered for shell completion.

Completion must answer as fast as `dlrun --help`, so it never imports a plugin (that imports
torch). Instead, each time dlrun loads the installed plugins it writes down their config
folders here, with the entry points they came from; completion reads the list back while the
installed entry points are still the same ones, and searches those folders too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CACHE_NAME = "plugin-configs.json"


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlrun" / CACHE_NAME


def entry_point_signature(points) -> list[str]:
    """What identifies the installed entry points: each one's name and value."""
    return sorted(f"{point.name}={point.value}" for point in points)


def remember(points, conf_dirs: list[Path]) -> None:
    """Write the installed entry points' config folders down; best effort (a read-only home is fine)."""
    record = {"entry_points": entry_point_signature(points), "conf_dirs": [str(d) for d in conf_dirs]}
    target = cache_file()
    try:
        if target.is_file() and json.loads(target.read_text()) == record:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        partial.write_text(json.dumps(record))
        partial.replace(target)  # atomic: a TAB never reads half a file
    except (OSError, ValueError):
        pass


def remembered(points) -> list[Path]:
    """The config folders written down for exactly these entry points, those that still exist; [] when
    nothing was written, or the installed plugins changed since (their folders are unknown until dlrun
    loads them again)."""
    try:
        record = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict) or record.get("entry_points") != entry_point_signature(points):
        return []
    return [Path(d) for d in record.get("conf_dirs") or [] if isinstance(d, str) and Path(d).is_dir()]
