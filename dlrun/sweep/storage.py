"""Where a study lives: a journal file beside the tracking store by default, or a database URL.

The same storage lets the same command resume a study and `--worker` processes, here or
on other machines, join it.
"""

from __future__ import annotations

from pathlib import Path

from dlrun.errors import ConfigError


def default_storage(store_uri: str, name: str) -> str:
    """A journal file beside the tracking store (./optuna/NAME.journal for a remote store)."""
    folder = Path(store_uri.removeprefix("sqlite:///")).parent if store_uri.startswith("sqlite:///") else Path.cwd()
    return str(folder / "optuna" / f"{name}.journal")


def open_storage(url: str):
    """An Optuna storage: a database URL (sqlite:///, postgresql://...) or a journal file's path."""
    import optuna

    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as error:  # SQLAlchemy's many errors: a wrong URL, a missing driver, no server
            raise ConfigError(f"--storage {url}: cannot open it: {' '.join(str(error).split())[:300]}") from None
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
            raise ConfigError(f"--worker: no study '{name}' in {storage_url} (studies there: "
                              f"{', '.join(names) or 'none'}). Start it without --worker first.") from None
    return optuna.create_study(study_name=name, storage=storage, direction=direction, pruner=pruner,
                               load_if_exists=True)
