"""The three training loops that bench/speed.py compares, on the same data, model and optimizer.

    python -m bench.loops --config "data=digits model=cnn trainer.max_epochs=5" --work /tmp/w

1. `handwritten`: plain PyTorch, whole batches indexed out of in-memory tensors (the limit).
2. `lightning`: vanilla Lightning, the usual peer: TensorDataset + DataLoader, a minimal module,
   no logger, checkpoints or progress bar.
3. `dlrun`: `dlrun.training.run.train(run)` as `dlrun train` calls it (MLflow store, checkpoints,
   plots, the served model), with one Lightning callback that times the epochs.
4. `lightning_floor`: Lightning's loop and nothing else: dlrun's batch loader, a module that logs nothing,
   no callbacks but the timer. What the Trainer's own per-batch machinery costs against the hand-written loop.

All three start from dlrun's own `prepare(run)`, so the split, initial weights, loss and optimizer
are the same. Per epoch each records `train` (the epoch's start to its last optimizer step) and
`epoch` (to the next epoch's start, or the end of training: validation, logging, checkpoints).
The loops take turns in one process (a load that changes hits them alike; imports are paid once),
each repeat in another order. Each --config is one model; the result, one JSON line on stdout,
holds every loop's epochs for every repeat.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.training.run import train
from dlrun.training.setup import prepare


def compose_run(overrides: list[str], work: Path):
    """The RunConfig `dlrun train OVERRIDES` would build, recording into work/."""
    return validate(compose([*overrides, f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
                             f"output_dir={work / 'outputs'}", "trainer.enable_progress_bar=false"]))


class Clock:
    """Per-epoch timestamps; CUDA work is waited for, so that a timestamp means the work is done."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.starts: list[float] = []
        self.train_ends: list[float] = []
        self.end = 0.0

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def epochs(self) -> list[dict[str, float]]:
        following = [*self.starts[1:], self.end]
        return [{"train": t - s, "epoch": f - s} for s, t, f in zip(self.starts, self.train_ends, following)]


class EpochTimer(pl.Callback):
    """Fills a Clock from Lightning's public hooks. on_train_end runs after every hook of the last
    epoch (checkpoints included), so the last epoch is measured like the others."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_epoch_start(self, trainer, module):
        self.clock.starts.append(self.clock.now())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:
            self.clock.train_ends.append(self.clock.now())

    def on_train_end(self, trainer, module):
        self.clock.end = self.clock.now()


def handwritten(run, device: str) -> tuple[list[dict], float]:
    """Train and validate each epoch by hand, under bf16 autocast where trainer.precision is bf16-mixed as
    Lightning would; (epochs, final val/acc)."""
    prepared = prepare(run)
    bf16 = str(run.trainer.get("precision", "32-true")).startswith("bf16")
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16)
    data, module = prepared.data, prepared.module
    net, loss_fn = module.net.to(device), module.loss_fn
    optimizer = module.make_optimizer(net.parameters())
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    batch, rows = run.data["batch_size"], len(x_train)
    generator = torch.Generator().manual_seed(run.seed)
    clock = Clock(device)
    for _ in range(run.trainer["max_epochs"]):
        clock.starts.append(clock.now())
        net.train()
        order = torch.randperm(rows, generator=generator).to(device)
        for start in range(0, rows, batch):
            index = order[start:start + batch]
            with autocast:
                loss = loss_fn(net(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        clock.train_ends.append(clock.now())
        net.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad(), autocast:
            for start in range(0, len(x_val), batch):
                outputs = net(x_val[start:start + batch])
                loss_fn(outputs, y_val[start:start + batch])  # the validation loss, as the others compute it
                correct += (outputs.argmax(dim=-1) == y_val[start:start + batch]).sum()
    clock.end = clock.now()
    TRAIN_ROWS[id(run)] = rows
    return clock.epochs(), float(correct) / len(x_val)


class Vanilla(pl.LightningModule):
    """The minimal LightningModule a user writes: loss per epoch, validation loss and accuracy."""

    def __init__(self, net, loss_fn, make_optimizer):
        super().__init__()
        self.net, self.loss_fn, self.make_optimizer = net, loss_fn, make_optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        outputs = self.net(x)
        self.log("val/loss", self.loss_fn(outputs, y), on_step=False, on_epoch=True)
        self.log("val/acc", (outputs.argmax(dim=-1) == y).float().mean(), on_step=False, on_epoch=True)

    def configure_optimizers(self):
        return self.make_optimizer(self.net.parameters())


def plain_trainer(run, clock: Clock, **options) -> pl.Trainer:
    """A Trainer with nothing of its own: no logger, checkpoints, progress bar or summary; the clock's timer."""
    return pl.Trainer(max_epochs=run.trainer["max_epochs"], accelerator="gpu" if clock.cuda else "cpu", devices=1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[EpochTimer(clock)], **options)


def lightning(run, device: str) -> tuple[list[dict], float]:
    prepared = prepare(run)
    data, module = prepared.data, prepared.module
    batch = run.data["batch_size"]
    train_loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True,
                              generator=torch.Generator().manual_seed(run.seed))
    val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch)
    clock = Clock(device)
    trainer = plain_trainer(run, clock)
    trainer.fit(Vanilla(module.net, module.loss_fn, module.make_optimizer), train_loader, val_loader)
    return clock.epochs(), float(trainer.callback_metrics["val/acc"])


class Bare(Vanilla):
    """A module that only computes: the training loss, and the validation loss and correct predictions."""

    correct = rows = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        outputs = self.net(x)
        self.loss_fn(outputs, y)
        if batch_idx == 0:
            self.correct = self.rows = 0
        self.correct += int((outputs.argmax(dim=-1) == y).sum())
        self.rows += len(y)


def lightning_floor(run, device: str) -> tuple[list[dict], float]:
    from dlrun.data.loader import BatchLoader

    prepared = prepare(run)
    data, module = prepared.data, prepared.module
    batch = run.data["batch_size"]
    clock = Clock(device)
    bare = Bare(module.net, module.loss_fn, module.make_optimizer)
    plain_trainer(run, clock, num_sanity_val_steps=0).fit(
        bare, BatchLoader(data.x_train, data.y_train, batch, shuffle=True, seed=run.seed),
        BatchLoader(data.x_val, data.y_val, batch, shuffle=False))
    return clock.epochs(), bare.correct / max(1, bare.rows)


def dlrun(run, device: str) -> tuple[list[dict], float]:
    clock = Clock(device)
    result = train(run, callbacks=[EpochTimer(clock)])
    return clock.epochs(), result.history[-1]["val/acc"]


LOOPS = {"handwritten": handwritten, "lightning": lightning, "dlrun": dlrun, "lightning_floor": lightning_floor}
TRAIN_ROWS: dict[int, int] = {}  # id(run) -> training rows, as the hand-written loop saw them


def peak_memory_mb(device: str) -> float | None:
    """The most GPU memory allocated since the last reset, in MiB; None off CUDA."""
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="one model's overrides, space-separated")
    parser.add_argument("--work", type=Path, required=True, help="where dlrun's store and outputs go")
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gpu = ["trainer=gpu"] if args.device.startswith("cuda") else []
    runs = [compose_run([*config.split(), *gpu], args.work) for config in args.config]
    out = [{"overrides": config.split(), "batch_size": run.data["batch_size"], "threads": args.threads,
            "loops": {loop: [] for loop in args.loops}} for config, run in zip(args.config, runs)]
    for repeat in range(args.repeats):
        order = args.loops[repeat % len(args.loops):] + args.loops[:repeat % len(args.loops)]  # none always first
        for loop in order:
            for run, entry in zip(runs, out):
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                epochs, val_acc = LOOPS[loop](run, args.device)
                entry["loops"][loop].append({"epochs": epochs, "val_acc": val_acc,
                                             "peak_memory_mb": peak_memory_mb(args.device)})
    for run, entry in zip(runs, out):
        entry["train_rows"] = TRAIN_ROWS.get(id(run))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
