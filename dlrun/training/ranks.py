"""Several processes, one record: which rank this is, and how Lightning's DDP ranks are started.

Under DistributedDataParallel every rank runs `train()`; only global rank 0 writes the
MLflow run, the checkpoints and the model. Ranks come from one of two places:

- an external launcher (torchrun, SLURM's srun) starts every rank with the user's command
  and RANK / SLURM_PROCID set; each rank composes the same config;
- Lightning's own launcher (`trainer=ddp` or `ddp_cpu` from a plain `dlrun ...`) starts
  ranks 1..N-1 from rank 0 when fit begins. Lightning would re-execute rank 0's command
  line, which for `dlrun sweep` or `dlrun resume` is not one training run; so rank 0 writes
  what its training is (config, MLflow run id, checkpoint to resume) to a launch file and
  the other ranks run `python -m dlrun.training.distributed LAUNCH_FILE` (that module is their
  entry point; this one is what a training needs to know about ranks).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

# What Lightning's launcher writes into rank 0's environment; put back after fit so that a
# later run in the same process (a sweep's next trial) starts afresh on a new port.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def global_rank() -> int:
    """This process's global rank: RANK (torchrun), SLURM_PROCID (srun with several tasks),
    else LOCAL_RANK on node NODE_RANK (Lightning's launcher); 0 in a single process."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    local, node = int(env.get("LOCAL_RANK", "0")), int(env.get("NODE_RANK", "0"))
    return local if node == 0 else node * 1_000 + local  # only zero-or-not matters off node 0


def ranks_on_this_node(num_nodes: int = 1) -> int:
    """The ranks running now on this machine, from the launchers' environment: LOCAL_WORLD_SIZE (torchrun),
    else WORLD_SIZE over `num_nodes` (the ranks Lightning's launcher started); 1 in a single process, and in
    rank 0 of Lightning's launcher before fit starts the others (it is alone until then)."""
    env = os.environ
    if "LOCAL_WORLD_SIZE" in env:
        return max(1, int(env["LOCAL_WORLD_SIZE"]))
    return max(1, int(env.get("WORLD_SIZE", "1")) // max(1, num_nodes))


class NullRecord:
    """The MLflow record of a rank other than 0: it writes nothing."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.run_name = ""
        self.uri = ""
        self.refused: list[str] = []  # nothing is written, so nothing is refused
        self.ended: str | None = None

    def note(self) -> None:
        return None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def lightning_launches_ranks(run, run_id: str, resume_checkpoint: Path | None, folder: Path):
    """While fit starts ranks 1..N-1 (Lightning's launcher), they run this training: the launch file."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    folder.mkdir(parents=True, exist_ok=True)
    launch = folder / "launch.json"
    launch.write_text(json.dumps({"config": run.config, "choices": run.choices, "overrides": run.overrides,
                                  "run_id": run_id, "resume": str(resume_checkpoint) if resume_checkpoint else None}))
    saved_env = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    original = subprocess_script._basic_subprocess_cmd
    subprocess_script._basic_subprocess_cmd = lambda: [sys.executable, "-m", "dlrun.training.distributed", str(launch)]
    try:
        yield
    finally:
        subprocess_script._basic_subprocess_cmd = original
        _end_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        launch.unlink(missing_ok=True)


def uses_lightning_launcher(trainer) -> bool:
    """True when this fit will start the other ranks itself (DDP from a single dlrun process)."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None) or getattr(trainer.strategy, "_launcher", None)
    return isinstance(launcher, _SubprocessScriptLauncher) and global_rank() == 0 and "RANK" not in os.environ


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def ranks_launched_for(trainer, run, run_id: str, resume_checkpoint: Path | None, folder: Path):
    """While fit and test run: the launch file for the ranks Lightning starts, where it starts them
    (rank 0 of a single dlrun process under DDP); nothing to do elsewhere."""
    if global_rank() or not uses_lightning_launcher(trainer):
        return contextlib.nullcontext()
    return lightning_launches_ranks(run, run_id, resume_checkpoint, folder)


def ddp_strategy():
    """Lightning's DDP strategy with dlrun's timeout for a lost rank."""
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(timeout=timedelta(seconds=ddp_timeout_seconds()))


def ddp_timeout_seconds() -> int:
    """How long a rank waits for the others (gloo/NCCL collectives, start-up): DLRUN_DDP_TIMEOUT, else 10 minutes,
    so that a lost rank fails the run instead of holding the others for torch's default half hour."""
    return int(os.environ.get("DLRUN_DDP_TIMEOUT", "600"))
