"""Where a study lives: a journal file beside the tracking store by default, or a database URL.

The same storage lets the same command resume a study and `--worker` processes, here or
on other machines, join it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from dlrun.database import check_database, engine_options, hide_passwords
from dlrun.errors import ConfigError, DlrunError


class StorageLost(DlrunError):
    """The study's database stopped answering while the study ran; the same command resumes it later."""

    exit_code = 1


STORAGE_ENV = "DLRUN_SWEEP_STORAGE"  # keeps a URL's password off command lines (ps, shell history, worker argv)


def given_storage(option: str | None) -> str | None:
    """The storage the user named: --storage, else $DLRUN_SWEEP_STORAGE; None for the default journal."""
    return option or os.environ.get(STORAGE_ENV) or None


def default_storage(store_uri: str, name: str) -> str:
    """A journal file beside the tracking store (./optuna/NAME.journal for a remote store)."""
    folder = Path(store_uri.removeprefix("sqlite:///")).parent if store_uri.startswith("sqlite:///") else Path.cwd()
    return str(folder / "optuna" / f"{name}.journal")


def open_storage(url: str):
    """An Optuna storage: a database URL (sqlite:///, postgresql://...) or a journal file's path."""
    import optuna

    if "://" in url:
        check_database(url, "--storage")  # within seconds, naming the host; never the password
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url))
        except Exception as error:  # SQLAlchemy's many errors: a wrong URL, a missing driver, no server
            reason = hide_passwords(" ".join(str(error).split()))[:300]
            raise ConfigError(f"--storage {hide_passwords(url)}: cannot open it: {reason}") from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=JournalFileOpenLock(url)))


def create_or_join(name: str, storage_url: str, direction: str, pruner, worker: bool):
    """The study called name in its storage: created or resumed, or (worker) joined, never created.

    Raises:
        ConfigError: a worker finds no such study, or the storage cannot be opened.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if worker and "://" not in storage_url and not Path(storage_url).is_file():
        raise ConfigError(f"--worker joins a study, and there is none at {storage_url}. Start it without --worker first.")
    storage = open_storage(storage_url)
    if worker:
        try:
            return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise ConfigError(f"--worker: no study '{name}' in {hide_passwords(storage_url)} (studies there: "
                              f"{', '.join(names) or 'none'}). Start it without --worker first.") from None
    return optuna.create_study(study_name=name, storage=storage, direction=direction, pruner=pruner,
                               load_if_exists=True)


def is_lost_connection(error: BaseException) -> bool:
    """True for a database that stopped answering (refused, cut, timed out), however Optuna wrapped it."""
    from sqlalchemy import exc

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (exc.OperationalError, exc.InterfaceError)) or getattr(
                error, "connection_invalidated", False):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def lost_as_error(storage_url: str, name: str):
    """Inside, a database storage that stops answering is a StorageLost naming it (no traceback)."""
    try:
        yield
    except StorageLost:
        raise
    except Exception as error:
        if "://" not in storage_url or not is_lost_connection(error):
            raise
        raise lost(storage_url, name, error) from None


def lost(storage_url: str, name: str, error: BaseException) -> StorageLost:
    """The StorageLost for error: where the study lives, what the driver said, how to resume."""
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    said = hide_passwords(" ".join(str(getattr(cause, "orig", None) or cause).split()))[:200]
    return StorageLost(f"the study '{name}' lost its storage {hide_passwords(storage_url)} ({said}). "
                       "The trials finished are kept there; run the same command again once it answers to "
                       "resume the study (trials cut short are then run again).")
