"""What a run was made with: versions, the command line and the git state."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from pathlib import Path


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment_tags(argv: list[str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """Tags that let a later reader reproduce or audit the run."""
    import pytorch_lightning
    import torch

    from dlrun.version import __version__

    cwd = cwd or Path.cwd()
    argv = sys.argv if argv is None else argv
    tags = {
        "dlrun.version": __version__,
        "dlrun.command": "dlrun " + shlex.join(argv[1:]),
        "dlrun.cwd": str(cwd),
        "dlrun.torch_version": torch.__version__,
        "dlrun.lightning_version": pytorch_lightning.__version__,
        "dlrun.python_version": platform.python_version(),
    }
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit:
        tags["dlrun.git_commit"] = commit
        tags["dlrun.git_dirty"] = str(bool(_git("status", "--porcelain", cwd=cwd)))
    return tags
