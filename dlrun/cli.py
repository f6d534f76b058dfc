"""The `dlrun` command: thin Typer commands over config, train and tracking.

Nothing heavy (torch, Lightning, MLflow) is imported at module level, so that
`dlrun --help` and `dlrun configs` answer at once.
"""

from __future__ import annotations

import functools
import signal
import sys
from typing import List, Optional

import typer

from dlrun.completion import (complete_export_formats, complete_groups, complete_overrides, complete_run_ids,
                              complete_sweeps)
from dlrun.errors import DlrunError
from dlrun.process_exit import exit_without_teardown

app = typer.Typer(
    help="dlrun: declarative deep-learning experiments. Hydra configs in, MLflow runs out.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion; completing reads YAML and SQLite only (dlrun.completion)
    pretty_exceptions_enable=False,
)

OVERRIDES_HELP = "Hydra overrides: GROUP=OPTION (model=cnn) or KEY=VALUE (optim.lr=0.01)."
TRACKING_HELP = "The MLflow store; default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."
CONFIG_DIR_HELP = "An extra config folder, searched before ./conf and the package's conf/."
PLUGIN_HELP = ("A plugin to load: a .py file or an installed module (repeatable). Also loaded: $DLRUN_PLUGINS and "
               "installed plugins (entry point group dlrun.plugins).")


def _version(show: bool) -> None:
    if show:
        from dlrun.version import __version__

        typer.echo(f"dlrun {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """dlrun: declarative deep-learning experiments. Hydra configs in, MLflow runs out."""


def command(**settings):
    """app.command, with any DlrunError printed as one message on stderr and exited with its code."""

    def decorate(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                if "plugin" in kwargs:  # before anything composes a config or reads a stored run
                    from dlrun.plugin_loading import use_plugins

                    use_plugins(kwargs.pop("plugin") or [])
                return function(*args, **kwargs)
            except DlrunError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(error.exit_code) from None

        return app.command(**settings)(run)

    return decorate


@command(context_settings={"ignore_unknown_options": True})
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False,
                                                    autocompletion=complete_overrides),
    cfg: bool = typer.Option(False, "--cfg", help="Print the composed, resolved config and exit."),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    multirun: bool = typer.Option(False, "--multirun", "-m", help="A grid sweep: every combination of the listed "
                                  "values (optim=adam,sgd optim.lr=0.1,0.01), under one parent run."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="With -m: trials at once, each in its own process."),
    metric: str = typer.Option("val/loss", "--metric", help="With -m: the per-epoch metric that orders the trials."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Train the composed model and record the run in MLflow."""
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate

    if multirun:
        from dlrun.tuning.grid import run_grid

        typer.echo(run_grid(list(overrides or []), config_dir, jobs, metric, typer.echo).summary())
        return
    run_config = validate(compose(list(overrides or []), config_dir))
    if cfg:
        from omegaconf import OmegaConf

        typer.echo(OmegaConf.to_yaml(OmegaConf.create(run_config.config)), nl=False)
        return
    from dlrun.summary import print_summary
    from dlrun.training.run import train as run_training

    result = run_training(run_config)
    if result.rank == 0:  # under DDP, rank 0 reports for all
        print_summary(result)


@command(context_settings={"ignore_unknown_options": True})
def sweep(
    name_or_path: str = typer.Argument(..., help="A sweep file: a name in ./sweeps or the shipped sweeps, or a path.",
                                       autocompletion=complete_sweeps),
    overrides: Optional[List[str]] = typer.Argument(None, help="Overrides of the base run, after the file's.",
                                                    show_default=False, autocompletion=complete_overrides),
    storage: Optional[str] = typer.Option(None, "--storage", help="The study's storage: a database URL "
                                          "(postgresql://...) or a journal file; default: optuna/NAME.journal "
                                          "beside the tracking store."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="The study; default: the sweep file's name."),
    worker: bool = typer.Option(False, "--worker", help="Join an existing study and run its trials; create nothing."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Override the file's n_trials."),
    n_jobs: Optional[int] = typer.Option(None, "--n-jobs", min=1, help="Override the file's n_jobs."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads per trial process."),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Run (or resume, or join) an Optuna study declared in a sweep file."""
    from dlrun.tuning.session import Options
    from dlrun.tuning.spec import find_sweep, load_spec
    from dlrun.tuning.study import run_study

    spec = load_spec(find_sweep(name_or_path))
    options = Options(list(overrides or []), config_dir, storage, study_name, worker, n_trials, n_jobs, threads)
    typer.echo(run_study(spec, options, typer.echo).summary())


@command()
def configs(
    group: Optional[str] = typer.Argument(None, help="A config group, e.g. model. Omit to list all groups.",
                                          autocompletion=complete_groups),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """List the config groups and their options, with one line on each."""
    from dlrun.catalog import list_groups

    typer.echo(list_groups(group, config_dir))


@command(name="plugins")
def list_plugins(
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """The plugins loaded here (installed, $DLRUN_PLUGINS, --plugin): where each comes from and what it adds."""
    from dlrun.plugin_loading import describe_plugins

    typer.echo(describe_plugins())


@command()
def runs(
    experiment: str = typer.Option("dlrun", "--experiment", "-e", help="The MLflow experiment."),
    filter_string: str = typer.Option("", "--filter", help="MLflow's filter syntax, e.g. \"params.model = 'cnn'\"."),
    sort: str = typer.Option("start_time DESC", "--sort", help="MLflow's order_by, e.g. \"metrics.`test/acc` DESC\"."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many runs."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """A table of recent runs: id, status, start, duration, choices, main metrics."""
    from dlrun.lifecycle.runs import runs_table

    typer.echo(runs_table(experiment, filter_string, sort, limit, tracking_uri))


@command(name="eval", context_settings={"ignore_unknown_options": True})
def evaluate(
    run_id: str = typer.Argument(..., help="The MLflow run id printed by dlrun train.",
                                autocompletion=complete_run_ids),
    overrides: Optional[List[str]] = typer.Argument(None, help="Data overrides (data.path=new.csv) to score other data.",
                                                    show_default=False),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Score a run's best checkpoint on its test split, or its model on other data."""
    from dlrun.lifecycle.evaluate import evaluate as run_eval

    metrics = run_eval(run_id, list(overrides or []), tracking_uri)
    typer.echo("  ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())))


@command(context_settings={"ignore_unknown_options": True})
def reproduce(
    run_id: str = typer.Argument(..., help="The MLflow run id to train again.",
                                autocompletion=complete_run_ids),
    overrides: Optional[List[str]] = typer.Argument(None, help="KEY=VALUE changes: a derived run, no equality check.",
                                                    show_default=False),
    atol: float = typer.Option(0.0, "--atol", min=0.0, help="Largest metric difference that still counts as equal."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Train a recorded run again from its stored config and compare every final metric."""
    from dlrun.lifecycle.reproduce import reproduce as run_reproduce

    outcome = run_reproduce(run_id, list(overrides or []), tracking_uri)
    typer.echo(outcome.report(atol))
    typer.echo(f"run_id: {outcome.new_id}")
    if not outcome.derived and not outcome.matches(atol):
        raise typer.Exit(1)


@command(context_settings={"ignore_unknown_options": True})
def resume(
    run_id: str = typer.Argument(..., help="The KILLED or FAILED run to continue.",
                                autocompletion=complete_run_ids),
    overrides: Optional[List[str]] = typer.Argument(None, help="For a FINISHED run: trainer.max_epochs=N trains "
                                                    "it longer in a new, derived run.", show_default=False),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Continue an interrupted run from its last checkpoint, in the same MLflow run."""
    from dlrun.lifecycle.resume import resume as run_resume
    from dlrun.summary import print_summary

    result = run_resume(run_id, list(overrides or []), tracking_uri)
    print_summary(result)


@command()
def predict(
    run_id: str = typer.Argument(..., help="The MLflow run id printed by dlrun train.",
                                autocompletion=complete_run_ids),
    input_path: str = typer.Option(..., "--input", "-i", help="Raw features: a CSV with a header row, or .npy; "
                                   "for a text run, a CSV with the run's text column."),
    output_path: str = typer.Option(..., "--output", "-o", help="Where to write the predictions (CSV)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Predict with a run's logged model: classes and probabilities, or values."""
    from dlrun.lifecycle.predict import predict as run_predict

    rows = run_predict(run_id, input_path, output_path, tracking_uri)
    typer.echo(f"wrote {rows} predictions to {output_path}")


@command()
def export(
    run_id: str = typer.Argument(..., help="The MLflow run id printed by dlrun train.",
                                autocompletion=complete_run_ids),
    output_path: str = typer.Option(..., "--output", "-o", help="The file to write, e.g. model.onnx."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (needs pip install 'dlrun[onnx]') or torchscript.",
                            autocompletion=complete_export_formats),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=PLUGIN_HELP),
) -> None:
    """Write a run's served model (raw features in, probabilities out) as ONNX or TorchScript."""
    from dlrun.lifecycle.export import export_run

    typer.echo(export_run(run_id, fmt, output_path, tracking_uri).summary())


@command()
def diff(
    run_a: str = typer.Argument(..., help="A run id.", autocompletion=complete_run_ids),
    run_b: str = typer.Argument(..., help="Another run id.", autocompletion=complete_run_ids),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """The config keys and final metrics that differ between two runs."""
    from dlrun.lifecycle.diff import diff_runs

    typer.echo(diff_runs(run_a, run_b, tracking_uri))


@command()
def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="The address to serve on."),
    port: int = typer.Option(5000, "--port", help="The port to serve on."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """MLflow's web UI on the store that dlrun train uses from this folder."""
    from dlrun.lifecycle.ui import run_ui

    raise typer.Exit(run_ui(host, port, tracking_uri))


def main() -> None:
    """Console-script entry point: Ctrl-C and SIGTERM before training starts end with exit 130.

    During training, dlrun.training installs its own handlers, which stop at a batch
    boundary with a checkpoint.
    """
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    code = 0
    try:
        app(prog_name="dlrun")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:
        typer.echo("error: interrupted before training started; no run was recorded.", err=True)
        code = 130
    exit_without_teardown(code)


if __name__ == "__main__":
    sys.exit(main())
