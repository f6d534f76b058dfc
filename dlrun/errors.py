"""User-facing errors: each carries the exit code the CLI returns for it.

A DlrunError is raised where the fact is known, with the bad value, where it came
from and the fix. The CLI prints its message without a traceback; tracebacks are
for dlrun's own bugs only.
"""

import difflib
from typing import Iterable


class DlrunError(Exception):
    """Base of every error dlrun reports to the user instead of a traceback."""

    exit_code = 2


class ConfigError(DlrunError):
    """The composed config is malformed: unknown name, wrong type, bad range."""


class DataError(DlrunError):
    """The data cannot be loaded or split as configured."""


class WorkerDied(DataError):
    """A process reading streamed data died (out of memory, a file that changed under a memory map)."""


class PluginError(DlrunError):
    """A plugin cannot be loaded, registers a name it may not, or a run needs one that is not loaded."""


class TrainingFailed(DlrunError):
    """The run itself failed (for example a non-finite loss)."""

    exit_code = 1


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """A ' did you mean ...?' hint naming the closest option, or '' if none is close."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name_message(kind: str, value: str, options: Iterable[str], where: str = "") -> str:
    """The standard message for a name that is not among the known options."""
    options = sorted(options)
    where_text = f" (in {where})" if where else ""
    return (
        f"unknown {kind} '{value}'{where_text}.{did_you_mean(value, options)}"
        f" Options: {', '.join(options)}."
    )
