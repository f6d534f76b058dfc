"""`python -m dlrun.training.distributed LAUNCH_FILE`: a DDP rank started by Lightning's launcher.

Rank 0 of a single dlrun process writes what its training is (config, MLflow run id, checkpoint
to resume) to a launch file while fit runs (`dlrun.training.ranks`); Lightning's launcher starts
ranks 1..N-1 with this module instead of re-executing rank 0's command line, which for
`dlrun sweep` or `dlrun resume` is not one training run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from dlrun.config.compose import Composed
from dlrun.config.validate import validate
from dlrun.errors import DlrunError
from dlrun.process_exit import exit_without_teardown
from dlrun.training.run import Resume, train


def run_rank(launch_file: str) -> None:
    """The training rank 0 described, on this rank."""
    _exit_with_parent()
    launch = json.loads(Path(launch_file).read_text())
    run = validate(Composed(config=launch["config"], choices=launch["choices"], overrides=launch["overrides"]))
    resume = Resume(Path(launch["resume"]), launch["run_id"]) if launch["resume"] else None
    train(run, resume=resume, rank_run_id=launch["run_id"])


def _exit_with_parent() -> None:
    """A rank started by rank 0 ends when rank 0 ends: it would otherwise wait for it forever."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="dlrun-exit-with-rank-0").start()


def main() -> None:
    """Rank 0 reports for all ranks, so this one only exits with the outcome's code.

    It exits without the interpreter's teardown: there, torch.distributed's threads may abort the
    process ("terminate called without an active exception"), and Lightning's launcher in rank 0
    answers a rank that exits with a non-zero code by killing rank 0 with SIGKILL, even a later
    trial of a sweep running in the same process.
    """
    try:
        run_rank(sys.argv[1])
    except DlrunError as error:
        exit_without_teardown(error.exit_code)
    exit_without_teardown(0)


if __name__ == "__main__":
    main()
