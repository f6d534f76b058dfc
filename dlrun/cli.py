"""The `dlrun` command: thin Typer commands over config, train and tracking.

Nothing heavy (torch, Lightning, MLflow) is imported at module level, so that
`dlrun --help` and `dlrun configs` answer at once.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from dlrun.errors import DlrunError

app = typer.Typer(
    help="dlrun: declarative deep-learning experiments. Hydra configs in, MLflow runs out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OVERRIDES_HELP = "Hydra overrides: GROUP=OPTION (model=cnn) or KEY=VALUE (optim.lr=0.01)."
TRACKING_HELP = "The MLflow store; default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."
CONFIG_DIR_HELP = "An extra config folder, searched before ./conf and the package's conf/."


def _fail(error: DlrunError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(error.exit_code)


@app.command(context_settings={"ignore_unknown_options": True})
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    cfg: bool = typer.Option(False, "--cfg", help="Print the composed, resolved config and exit."),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
) -> None:
    """Train the composed model and record the run in MLflow."""
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate

    try:
        run_config = validate(compose(list(overrides or []), config_dir))
        if cfg:
            from omegaconf import OmegaConf

            typer.echo(OmegaConf.to_yaml(OmegaConf.create(run_config.config)), nl=False)
            return
        from dlrun.summary import print_summary
        from dlrun.train.run import train as run_training

        result = run_training(run_config)
    except DlrunError as error:
        _fail(error)
    print_summary(run_config, result)


@app.command()
def configs(
    group: Optional[str] = typer.Argument(None, help="A config group, e.g. model. Omit to list all groups."),
    config_dir: Optional[str] = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
) -> None:
    """List the config groups and their options, with one line on each."""
    from dlrun.catalog import list_groups

    try:
        typer.echo(list_groups(group, config_dir))
    except DlrunError as error:
        _fail(error)


@app.command()
def runs(
    experiment: str = typer.Option("dlrun", "--experiment", "-e", help="The MLflow experiment."),
    filter_string: str = typer.Option("", "--filter", help="MLflow's filter syntax, e.g. \"params.model = 'cnn'\"."),
    sort: str = typer.Option("start_time DESC", "--sort", help="MLflow's order_by, e.g. \"metrics.`test/acc` DESC\"."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many runs."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """A table of recent runs: id, status, start, duration, choices, main metrics."""
    from dlrun.lifecycle.runs import runs_table

    try:
        typer.echo(runs_table(experiment, filter_string, sort, limit, tracking_uri))
    except DlrunError as error:
        _fail(error)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dlrun")


if __name__ == "__main__":
    sys.exit(main())
