"""dlrun from Python: the functions behind the commands, for notebooks and scripts.

    import dlrun
    result = dlrun.train(["model=cnn", "optim=adam"])         # the same MLflow record as `dlrun train`
    result.run_id, result.test_metrics, result.model_uri
    cfg = dlrun.compose(["model=mlp", "data=iris"])           # the validated config, as --cfg prints it
    study = dlrun.sweep("digits_cnn", n_trials=10)
    model = dlrun.load_model(result.run_id)                   # a torch module on raw features
    proba = dlrun.predict(result.run_id, X)                   # numpy in, numpy out

Bad input raises a DlrunError (dlrun.errors) with the message the command would print,
before any MLflow run exists; nothing is printed unless `progress=True`; signal handlers
are restored as they were found, so several runs follow one another in one kernel.
Importing this module imports nothing heavy: each function imports what it needs.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch

    from dlrun.config.validate import RunConfig
    from dlrun.lifecycle.reproduce import Reproduction
    from dlrun.tuning.grid import SweepResult
    from dlrun.training.run import TrainResult


def compose(overrides: Sequence[str] = (), *, config_dir: str | None = None,
            plugins: Iterable[str] = ()) -> dict[str, Any]:
    """The composed and validated config, resolved to plain dicts and lists, as `dlrun train --cfg` prints it.

    Args:
        overrides: Hydra overrides, as on the command line ("model=mlp", "optim.lr=0.01").
        config_dir: an extra config folder, searched before ./conf and the package's.
        plugins: plugins to load first (.py files or module names), besides the installed ones.

    Raises:
        ConfigError: an unknown name, key or value (did-you-mean included).
        PluginError: a plugin that fails to load.
    """
    return run_config(overrides, config_dir=config_dir, plugins=plugins).config


def run_config(overrides: Sequence[str] = (), *, config_dir: str | None = None,
               plugins: Iterable[str] = ()) -> "RunConfig":
    """Like `compose`, but the RunConfig itself: the config plus each component's bound options."""
    from dlrun.config.compose import compose as compose_tree
    from dlrun.config.validate import validate
    from dlrun.plugin_loading import use_plugins

    use_plugins(plugins)
    return validate(compose_tree(list(overrides), config_dir))


def train(overrides: Sequence[str] = (), *, config_dir: str | None = None, plugins: Iterable[str] = (),
          progress: bool = False) -> "TrainResult":
    """Train and test the composed model, recording one MLflow run, as `dlrun train` does.

    Args:
        overrides: Hydra overrides, as on the command line.
        config_dir: an extra config folder.
        plugins: plugins to load first (.py files or module names).
        progress: show Lightning's progress bar and dlrun's summary; otherwise nothing is printed.

    Returns:
        The run's id, test metrics, per-epoch history, model URI and checkpoint folder.

    Raises:
        ConfigError, DataError, PluginError: bad input, before any MLflow run exists.
        TrainingFailed: the run failed while training (recorded as FAILED).
        KeyboardInterrupt: Ctrl-C; the run is recorded as KILLED with its last checkpoint.
    """
    from dlrun.training.run import train as run_training

    run = run_config(_with_progress(overrides, progress), config_dir=config_dir, plugins=plugins)
    with _quiet(not progress):
        result = run_training(run)
    if progress:
        from dlrun.summary import print_summary

        print_summary(result)
    return result


def sweep(name_or_path: str, overrides: Sequence[str] = (), *, n_trials: int | None = None,
          n_jobs: int | None = None, storage: str | None = None, study_name: str | None = None,
          config_dir: str | None = None, plugins: Iterable[str] = (), progress: bool = False) -> "SweepResult":
    """Run (or resume) the Optuna study of a sweep file, as `dlrun sweep` does.

    Args:
        name_or_path: a sweep file: a name in ./sweeps or the shipped sweeps, or a path.
        overrides: overrides of the base run, after the file's.
        n_trials, n_jobs: override the file's.
        storage: the study's storage URL or journal file; default beside the tracking store.
        study_name: the study; default: the sweep file's name.
        config_dir: an extra config folder.
        plugins: plugins to load first; n_jobs worker processes load them too.
        progress: print a line per trial.

    Returns:
        The study's result: the parent run, every trial, the best one (`summary()` is the command's text).
    """
    from dlrun.plugin_loading import use_plugins
    from dlrun.tuning.session import Options
    from dlrun.tuning.spec import find_sweep, load_spec
    from dlrun.tuning.study import run_study

    use_plugins(plugins)
    spec = load_spec(find_sweep(name_or_path))
    options = Options(list(overrides), config_dir, storage, study_name, False, n_trials, n_jobs, None)
    with _quiet(not progress):
        return run_study(spec, options, print if progress else _silent)


def grid(overrides: Sequence[str], *, jobs: int = 1, metric: str = "val/loss", config_dir: str | None = None,
         plugins: Iterable[str] = (), progress: bool = False) -> "SweepResult":
    """Every combination of the listed values (["optim=adam,sgd", "optim.lr=0.1,0.01"]), as `dlrun train -m`."""
    from dlrun.plugin_loading import use_plugins
    from dlrun.tuning.grid import run_grid

    use_plugins(plugins)
    with _quiet(not progress):
        return run_grid(list(overrides), config_dir, jobs, metric, print if progress else _silent)


def load_model(run_id: str, *, tracking_uri: str | None = None, plugins: Iterable[str] = ()) -> "torch.nn.Module":
    """The run's served model as a torch module: raw features in (preprocessing included), class
    probabilities or values in the targets' units out. It loads without the run's plugins: the model is
    a torch.export program, data only. A text run's takes a list of strings (dlrun.serving.text_model's
    TextModel: its tokenizer, then the program on token ids, `ids_model`).

    Args:
        run_id: the MLflow run id.
        tracking_uri: the store; default as `dlrun train` chooses.
        plugins: plugins to load first: a run without a logged model is rebuilt from its checkpoint.

    Raises:
        RunNotFound: an unknown run id, or a run that logged no model.
    """
    from dlrun.lifecycle.checkpoint_model import CheckpointModel
    from dlrun.lifecycle.stored import load_run
    from dlrun.plugin_loading import use_plugins
    from dlrun.serving.text_model import text_model_of

    use_plugins(plugins)
    stored = load_run(run_id, tracking_uri)
    served = stored.served_model()  # its checks: the run's own model, files as dlrun logs them
    if isinstance(served, CheckpointModel):  # a sweep trial without a logged model: rebuilt from its checkpoint
        return served.model
    text_model = text_model_of(served)
    if text_model is not None:  # a text run: a module whose forward takes a list of strings
        return text_model
    loaded = served.get_raw_model()  # the program served_model checked, not a second, unchecked download
    return loaded.module() if hasattr(loaded, "module") else loaded


def predict(run_id: str, features: "np.ndarray | Any", *, tracking_uri: str | None = None,
            plugins: Iterable[str] = ()) -> "np.ndarray":
    """The run's predictions for raw features (an array or DataFrame of shape (N, features); a text run:
    a list of strings, a Series, or a DataFrame with the text column): class probabilities (N, classes)
    for classification, values for regression."""
    import numpy as np

    from dlrun.lifecycle.stored import check_feature_count, load_run
    from dlrun.plugin_loading import use_plugins
    from dlrun.serving.text_model import text_model_of

    use_plugins(plugins)
    stored = load_run(run_id, tracking_uri)
    model = stored.served_model()
    text_model = text_model_of(model)
    if text_model is not None:  # its own predict finds the text column in a DataFrame by name
        return text_model.predict(features)
    values = np.asarray(features, dtype=np.float32)
    check_feature_count(model, values, "the features given", run_id)
    return np.asarray(model.predict(values))


def evaluate(run_id: str, overrides: Sequence[str] = (), *, tracking_uri: str | None = None,
             plugins: Iterable[str] = ()) -> dict[str, float]:
    """The run's best checkpoint scored on its test split (or, with data overrides, its model on other data)."""
    from dlrun.lifecycle.evaluate import evaluate as run_eval
    from dlrun.plugin_loading import use_plugins

    use_plugins(plugins)
    with _quiet(True):
        return run_eval(run_id, list(overrides), tracking_uri)


def reproduce(run_id: str, overrides: Sequence[str] = (), *, tracking_uri: str | None = None,
              plugins: Iterable[str] = ()) -> "Reproduction":
    """Train the run again from its stored config; the result compares every final metric and lists drift."""
    from dlrun.lifecycle.reproduce import reproduce as run_reproduce
    from dlrun.plugin_loading import use_plugins

    use_plugins(plugins)
    with _quiet(True):
        return run_reproduce(run_id, list(overrides), tracking_uri)


def _with_progress(overrides: Sequence[str], progress: bool) -> list[str]:
    """The overrides, with Lightning's bar on or off as asked unless they set it themselves."""
    given = any(o.split("=", 1)[0].lstrip("+") == "trainer.enable_progress_bar" for o in overrides)
    return list(overrides) if given else [*overrides, f"trainer.enable_progress_bar={str(progress).lower()}"]


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """dlrun's own lines (and a library's stray prints) kept off stdout while quiet."""
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _silent(_line: str) -> None:
    pass
