"""A sweep worker started before its study exists, so that its imports overlap the first process's.

`dlrun sweep --n-jobs N` starts N - 1 of these as soon as it knows N: each imports the heavy
stack (about 5 s on a small machine) while the first process checks the sweep and creates the
study, then reads one line from its stdin, a JSON object with the worker's command line, its
log file and its environment, and runs that command as `dlrun sweep --worker` would. An empty
stdin (the sweep was refused or interrupted first) ends it with nothing done. The storage URL
comes through stdin, so a database's password stays out of `ps`.
"""

from __future__ import annotations

import json
import os
import sys

WARM_IMPORTS = ("torch", "pytorch_lightning", "optuna", "mlflow", "dlrun.training.run", "dlrun.tuning.study")


def main() -> None:
    for module in WARM_IMPORTS:
        try:
            __import__(module)
        except Exception:  # the worker's own command meets it again and says what is wrong
            break
    line = sys.stdin.readline()
    if not line.strip():
        return
    order = json.loads(line)
    log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (1, 2):
        os.dup2(log, stream)
    os.close(log)
    os.environ.update(order["environment"])
    sys.argv = ["dlrun", *order["argv"]]
    from dlrun.cli import main as dlrun_main

    dlrun_main()


if __name__ == "__main__":
    main()
