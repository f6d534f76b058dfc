"""The three training loops that bench/speed.py times, on the same model, data and optimizer.

1. `handwritten`: a plain PyTorch loop that indexes whole batches out of in-memory tensors
   (the limit: no framework between the loop and the model).
2. `lightning`: vanilla PyTorch Lightning, the usual peer setup: TensorDataset + DataLoader,
   a minimal LightningModule (loss logged per epoch, val loss and accuracy), no logger,
   no checkpoints, no progress bar, no model summary.
3. `dlrun`: dlrun's own path, `dlrun.train.run.train(run)` exactly as `dlrun train` calls it
   (MLflow logging into a throw-away SQLite store, checkpoints, the config's trainer options),
   plus one timing callback.

The model, its initial weights, the data split, the optimizer and the loss all come from
dlrun's own `prepare(run)` with the same seed, so the three loops train the same thing.

Every loop records, per epoch, the epoch's start and the end of its last training batch (after
the optimizer step), and the end of training. From them: `train` (training batches only),
`epoch` (start of this epoch to start of the next, or to the end of training for the last one:
everything the loop does per epoch) and `rest` (epoch - train: validation, and the epoch's end:
metric logging, checkpoints, loop bookkeeping).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

LOOPS = ("handwritten", "lightning", "dlrun")

# The two models of issue #6, as dlrun composes them; the extra overrides are applied after these.
MODELS = {
    "cnn": ["data=digits", "model=cnn"],
    "mlp": ["data=wine", "model=mlp"],
}


def rss_mib() -> float:
    """This process's resident memory now, MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose_run(overrides: list[str], scratch: Path, store: Path | None = None):
    """dlrun's RunConfig for overrides; its outputs in scratch, its MLflow store in store (default: scratch)."""
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate

    settings = [f"tracking.uri=sqlite:///{(store or scratch) / 'mlflow.db'}", f"output_dir={scratch / 'outputs'}"]
    return validate(compose(list(overrides) + settings))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Epochs:
    """Per-epoch timestamps, in perf_counter seconds."""

    def __init__(self):
        self.starts: list[float] = []
        self.train_ends: list[float] = []
        self.first_batch: float | None = None  # when the first training batch started
        self.last_batch_end: float | None = None
        self.rss_at_start: float | None = None  # resident MiB when training starts (after imports and data)
        self.train_rows: int | None = None
        self.fit_end: float | None = None  # the end of training: every hook of the last epoch has run

    def table(self) -> list[dict[str, float]]:
        rows = []
        for i, (start, train_end) in enumerate(zip(self.starts, self.train_ends)):
            following = self.starts[i + 1] if i + 1 < len(self.starts) else self.fit_end
            epoch = following - start
            rows.append({"train": train_end - start, "rest": epoch - (train_end - start), "epoch": epoch})
        return rows


def timer_callback(epochs: Epochs, device: str = "cpu", tracking: Tracking | None = None):
    """A Lightning callback that fills `epochs` (and tells `tracking` when fit runs); put it last."""
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        def on_fit_start(self, trainer, module):
            if tracking is not None:
                tracking.fitting = True

        def on_fit_end(self, trainer, module):
            if tracking is not None:
                tracking.fitting = False

        def on_train_start(self, trainer, module):
            epochs.rss_at_start = rss_mib()
            loader = trainer.train_dataloader  # dlrun's BatchLoader (.x) or a DataLoader (.dataset)
            epochs.train_rows = len(loader.dataset) if hasattr(loader, "dataset") else len(loader.x)

        def on_train_epoch_start(self, trainer, module):
            _sync(device)
            epochs.starts.append(time.perf_counter())

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if epochs.first_batch is None:
                epochs.first_batch = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx + 1 == trainer.num_training_batches:
                _sync(device)
                now = time.perf_counter()
                epochs.last_batch_end = now
                epochs.train_ends.append(now)

        def on_train_end(self, trainer, module):
            # After the last epoch's every hook (ModelCheckpoint saves in its on_train_epoch_end, which
            # Lightning calls after the other callbacks'), so the last epoch is measured like the others.
            _sync(device)
            epochs.fit_end = time.perf_counter()

    return EpochTimer()


# ---------------------------------------------------------------------------------------------
# 1. hand-written


def handwritten(run, epochs_count: int, device: str = "cpu") -> dict:
    """Whole batches indexed out of tensors (on `device`), Adam and the loss of the dlrun module."""
    import torch

    from dlrun.train.setup import prepare

    prepared = prepare(run)
    data, module = prepared.data, prepared.module
    net = module.net.to(device)
    loss_fn = module.loss_fn
    optimizer = module.make_optimizer(net.parameters())
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    batch = run.data["batch_size"]
    n = len(x_train)
    generator = torch.Generator().manual_seed(run.seed)
    epochs = Epochs()
    epochs.rss_at_start = rss_mib()
    for _ in range(epochs_count):
        _sync(device)
        epochs.starts.append(time.perf_counter())
        net.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, batch):
            if epochs.first_batch is None:
                epochs.first_batch = time.perf_counter()
            rows = order[start : start + batch]
            x, y = x_train[rows], y_train[rows]
            loss = loss_fn(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(x)
        _sync(device)
        epochs.train_ends.append(time.perf_counter())
        net.eval()
        correct = torch.zeros((), device=device)
        val_loss = torch.zeros((), device=device)
        with torch.no_grad():
            for start in range(0, len(x_val), batch):
                x, y = x_val[start : start + batch], y_val[start : start + batch]
                outputs = net(x)
                val_loss += loss_fn(outputs, y) * len(x)
                if data.task == "classification":
                    correct += (outputs.argmax(dim=-1) == y).sum()
        last = {"train/loss": float(total) / n, "val/loss": float(val_loss) / len(x_val),
                "val/acc": float(correct) / len(x_val)}
    epochs.fit_end = time.perf_counter()
    return {"epochs": epochs.table(), "final": last, "rss_at_fit_start_mib": epochs.rss_at_start, "train_rows": n}


# ---------------------------------------------------------------------------------------------
# 2. vanilla Lightning


def vanilla_lightning(run, epochs_count: int, device: str = "cpu") -> dict:
    """A minimal LightningModule over TensorDataset + DataLoader; no logger, checkpoints or progress bar."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dlrun.train.setup import prepare

    prepared = prepare(run)
    data, module = prepared.data, prepared.module
    classification = data.task == "classification"

    class Vanilla(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = module.net
            self.loss_fn = module.loss_fn

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.loss_fn(self.net(x), y)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            outputs = self.net(x)
            self.log("val/loss", self.loss_fn(outputs, y), on_step=False, on_epoch=True)
            if classification:
                self.log("val/acc", (outputs.argmax(dim=-1) == y).float().mean(), on_step=False, on_epoch=True)

        def configure_optimizers(self):
            return module.make_optimizer(self.net.parameters())

    batch = run.data["batch_size"]
    train_loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True,
                              generator=torch.Generator().manual_seed(run.seed))
    val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch)
    epochs = Epochs()
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    trainer = pl.Trainer(max_epochs=epochs_count, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer_callback(epochs, device)])
    trainer.fit(Vanilla(), train_loader, val_loader)
    final = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"epochs": epochs.table(), "final": final, "rss_at_fit_start_mib": epochs.rss_at_start,
            "train_rows": epochs.train_rows}


# ---------------------------------------------------------------------------------------------
# 3. dlrun


class Tracking:
    """Time spent in MLflow logging: every method of dlrun's RunRecord (and the plots), wrapped with a
    timer in this process only (nothing under dlrun/ changes).

    `seconds` per method (a method that calls another, like start -> create, counts both);
    `outer` the calls not made from another RunRecord call (no double counting); `in_fit` those made
    while Lightning's fit runs (the per-epoch metrics), switched by the epoch timer."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.outer = 0.0
        self.in_fit = 0.0
        self.fitting = False
        self._depth = 0

    def install(self) -> Tracking:
        import functools

        from dlrun.tracking import plots, record

        def wrap(owner, name, label, counts_as_mlflow=True):
            original = getattr(owner, name)
            while hasattr(original, "_bench_original"):  # a second install in one process wraps the original
                original = original._bench_original

            @functools.wraps(original)
            def timed(*args, **kwargs):
                outermost = counts_as_mlflow and self._depth == 0
                self._depth += counts_as_mlflow
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    spent = time.perf_counter() - started
                    self._depth -= counts_as_mlflow
                    self.seconds[label] = self.seconds.get(label, 0.0) + spent
                    self.calls[label] = self.calls.get(label, 0) + 1
                    if outermost:
                        self.outer += spent
                        if self.fitting:
                            self.in_fit += spent

            timed._bench_original = original
            setattr(owner, name, timed)

        for name, value in list(vars(record.RunRecord).items()):
            if callable(value) and (not name.startswith("_") or name == "__init__"):
                wrap(record.RunRecord, name, f"RunRecord.{name}")
        # matplotlib's drawing is not MLflow's: the plots' own time is listed, their log_file calls count
        wrap(plots, "log_plots", "plots.log_plots (drawing and logging)", counts_as_mlflow=False)
        return self


class Attribution:
    """Wall time spent inside chosen functions during the measured epochs (warm-up excluded).

    Only for the profiling run of dlrun's path: the wrappers cost about a microsecond a call,
    which the timed runs should not pay. Labels that start with two spaces are part of the
    label above them (e.g. self.log inside training_step)."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.active = False
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.epochs = 0
        self.first_start: float | None = None  # the first measured epoch's start
        self.span = 0.0  # from there to the end of training (every hook of the last epoch included)

    def timed(self, label: str, function):
        def wrapper(*args, **kwargs):
            if not self.active:
                return function(*args, **kwargs)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
                self.calls[label] = self.calls.get(label, 0) + 1

        return wrapper

    def timed_iterator(self, label: str, function):
        """A generator function whose every next() is timed (the batches a loader yields)."""
        attribution = self

        def wrapper(*args, **kwargs):
            iterator = function(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    if attribution.active:
                        attribution.seconds[label] = attribution.seconds.get(label, 0.0) + time.perf_counter() - started
                yield item

        return wrapper

    def per_epoch_ms(self) -> dict[str, float]:
        return {k: 1000 * v / max(self.epochs, 1) for k, v in self.seconds.items()}

    def epoch_ms(self) -> float:
        return 1000 * self.span / max(self.epochs, 1)


HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
         "on_before_optimizer_step", "on_before_zero_grad", "on_train_epoch_start", "on_train_epoch_end",
         "on_validation_start", "on_validation_end", "on_validation_epoch_start", "on_validation_epoch_end",
         "on_validation_batch_start", "on_validation_batch_end", "on_save_checkpoint", "state_dict")


def _install_attribution(attribution: Attribution):
    """Patch (in this process only) the pieces of dlrun's per-epoch path with timers; a callback that
    switches the timers on after the warm-up epochs and wraps every callback's hooks at fit start."""
    import pytorch_lightning as pl
    import torch

    from dlrun.data.loader import BatchLoader
    from dlrun.train import module as module_file

    BatchLoader.__iter__ = attribution.timed_iterator("BatchLoader: next batch (index, shuffle)", BatchLoader.__iter__)
    module_file.DlrunModule.training_step = attribution.timed(
        "training_step (forward, loss, check, log)", module_file.DlrunModule.training_step)
    module_file.DlrunModule.validation_step = attribution.timed(
        "validation_step (forward, loss, metric, log)", module_file.DlrunModule.validation_step)
    original_log = pl.LightningModule.log

    def log(self, name, *args, **kwargs):
        label = "  self.log (train/*)" if name.startswith("train/") else "  self.log (val/*)"
        return attribution.timed(label, original_log)(self, name, *args, **kwargs)

    pl.LightningModule.log = log

    class _Torch:
        """dlrun.train.module's `torch`, with isfinite timed (it decides `if not torch.isfinite(loss)`)."""

        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def isfinite(value):
            check = attribution.timed("  non-finite loss check (bool(isfinite))", lambda v: bool(torch.isfinite(v)))
            return check(value)

    module_file.torch = _Torch()
    backward = pl.LightningModule.backward
    pl.LightningModule.backward = attribution.timed("backward", backward)

    class Switch(pl.Callback):
        def on_train_start(self, trainer, module):
            module.net.forward = attribution.timed("  net forward (training and validation)", module.net.forward)
            optimizer = trainer.optimizers[0]
            optimizer.step = attribution.timed("optimizer.step (runs the closure: training_step, backward)",
                                               optimizer.step)
            for metric in module.metrics.values():
                metric.update = attribution.timed("  torchmetrics update", metric.update)
                metric.compute = attribution.timed("torchmetrics compute", metric.compute)
            for callback in trainer.callbacks:
                if callback is self:
                    continue
                label = f"callback {type(callback).__name__}"
                for hook in HOOKS:
                    if hasattr(callback, hook):
                        setattr(callback, hook, attribution.timed(label, getattr(callback, hook)))

        def on_train_epoch_start(self, trainer, module):
            attribution.active = trainer.current_epoch >= attribution.warmup
            if attribution.active:
                attribution.epochs += 1
                if attribution.first_start is None:
                    attribution.first_start = time.perf_counter()

        def on_train_end(self, trainer, module):
            attribution.active = False
            if attribution.first_start is not None:
                attribution.span = time.perf_counter() - attribution.first_start
            module.net.__dict__.pop("forward", None)  # the served model is a deep copy of net: keep it plain

    return Switch()


def dlrun_path(run, epochs_count: int, device: str = "cpu", attribute: bool = False, warmup: int = 1) -> dict:
    """`dlrun train` in this process: train(run) with one extra callback that times the epochs.

    attribute: also time the pieces of each epoch (see Attribution); for a profiling run only."""
    from dlrun.train.run import train

    assert run.trainer["max_epochs"] == epochs_count, "set trainer.max_epochs in the overrides"
    tracking = Tracking().install()
    import_started = time.perf_counter()
    from mlflow.tracking import MlflowClient  # noqa: F401  imported by train() at its first MLflow call

    mlflow_import = time.perf_counter() - import_started
    epochs = Epochs()
    callbacks = [timer_callback(epochs, device, tracking)]
    attribution = None
    if attribute:
        attribution = Attribution(warmup)
        callbacks.insert(0, _install_attribution(attribution))
    started = time.perf_counter()
    result = train(run, callbacks=callbacks)
    total = time.perf_counter() - started
    return {
        "epochs": epochs.table(), "final": result.final_metrics, "rss_at_fit_start_mib": epochs.rss_at_start,
        "train_rows": epochs.train_rows,
        "fit_seconds": result.fit_seconds, "train_call_seconds": total,
        "first_batch_after_start": (epochs.first_batch - started) if epochs.first_batch else None,
        "after_last_batch": (started + total - epochs.last_batch_end) if epochs.last_batch_end else None,
        "tracking_seconds": tracking.seconds, "tracking_calls": tracking.calls,
        "mlflow_seconds": tracking.outer,  # every RunRecord call of the run, nested calls once
        "mlflow_fit_seconds": tracking.in_fit,  # those during fit: the per-epoch metrics
        "mlflow_import_seconds": mlflow_import,  # done here, before train(), so that RunRecord() is the store's opening
        **({"attribution_ms": attribution.per_epoch_ms(), "attribution_calls": attribution.calls,
            "attributed_epochs": attribution.epochs, "attributed_epoch_ms": attribution.epoch_ms()}
           if attribution else {}),
    }


# ---------------------------------------------------------------------------------------------
# what-if patches: dlrun's per-epoch path with one suggested change, applied in this process only
# (nothing under dlrun/ changes), to measure what the change would buy. Each takes a `replace`
# function that swaps an attribute and remembers the old value, so that the patch can be undone.


def _patch_lean_step(replace) -> None:
    """training_step without the per-step `self.log` and the per-step non-finite check (a sync on a GPU):
    the loss is summed on the device and logged once, at the epoch's last batch, with the same value
    Lightning's on_epoch mean gives; the check runs on that sum (per epoch, not per step)."""
    from dlrun.errors import TrainingFailed
    from dlrun.train import module as module_file

    def training_step(self, batch, batch_index):
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        if self._penalized:
            loss = loss + self.penalty()
        weighted = loss.detach() * len(x)
        if batch_index == 0:
            self._loss_sum, self._loss_rows = weighted, len(x)
        else:
            self._loss_sum, self._loss_rows = self._loss_sum + weighted, self._loss_rows + len(x)
        if batch_index + 1 == self.trainer.num_training_batches:
            mean = self._loss_sum / self._loss_rows
            if not module_file.torch.isfinite(mean):
                raise TrainingFailed(f"the training loss became {mean.item()} in epoch {self.current_epoch}.")
            self.log("train/loss", mean, on_step=False, on_epoch=True, batch_size=1)
        return loss

    replace(module_file.DlrunModule, "training_step", training_step)


def _patch_async_mlflow(replace) -> None:
    """Per-epoch metrics sent with MLflow's asynchronous logging (log_batch(synchronous=False)),
    flushed before the run ends: the SQLite write leaves the training thread."""
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    from dlrun.tracking import record

    def log_metrics(self, metrics, step):
        now = get_current_time_millis()
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
                              synchronous=False)

    original_end = record.RunRecord.end

    def end(self, status):
        import mlflow

        mlflow.flush_async_logging()
        return original_end(self, status)

    replace(record.RunRecord, "log_metrics", log_metrics)
    replace(record.RunRecord, "end", end)


def _patch_checkpoint_at_end(replace) -> None:
    """ModelCheckpoint writes no file during fit: a new best (or last) state is copied in memory and the
    files are written once, when training ends (stands for: keep the best weights in memory, write
    them at the end and on interruption). The copies cost what a real change would cost."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    save, train_end = ModelCheckpoint._save_checkpoint, ModelCheckpoint.on_train_end

    def copy_of(module):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def deferred(self, trainer, filepath):
        self.__dict__.setdefault("_bench_pending", {})[filepath] = copy_of(trainer.lightning_module)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def on_train_end(self, trainer, module):
        pending = self.__dict__.pop("_bench_pending", {})
        if pending:
            current = copy_of(module)
            for filepath, state in pending.items():
                module.load_state_dict(state)
                save(self, trainer, filepath)
            module.load_state_dict(current)
        train_end(self, trainer, module)

    replace(ModelCheckpoint, "_save_checkpoint", deferred)
    replace(ModelCheckpoint, "on_train_end", on_train_end)


PATCHES = {"lean_step": _patch_lean_step, "async_mlflow": _patch_async_mlflow,
           "checkpoint_at_end": _patch_checkpoint_at_end}


class patched:
    """`with patched(["lean_step", ...]):` the named what-if patches, undone on exit."""

    def __init__(self, names: list[str] | None):
        self.names = list(names or [])
        self.saved: list[tuple[object, str, object]] = []

    def _replace(self, owner, name, value) -> None:
        self.saved.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, value)

    def __enter__(self):
        for name in self.names:
            PATCHES[name](self._replace)
        return self

    def __exit__(self, *exc):
        for owner, name, value in reversed(self.saved):
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        return False


def dlrun_variants(model_overrides: list[str], epochs_count: int, variants: list[dict], rounds: int,
                   scratch: Path, store: Path | None) -> dict:
    """dlrun's path once per variant (trainer overrides and/or what-if patches), in rounds, all in this
    process: one throw-away warm-up run first, then `rounds` passes over the variants in turn, so that
    a change of the machine's load hits every variant alike. Per variant and round: the median
    training and whole-epoch times (s) of the epochs after the first."""
    import statistics

    def medians(result: dict) -> dict:
        measured = result["epochs"][1:] or result["epochs"]
        return {k: statistics.median(e[k] for e in measured) for k in ("train", "epoch")}

    warm = compose_run([*model_overrides, "trainer.max_epochs=2"], scratch, store)
    dlrun_path(warm, 2)
    out = {v["name"]: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            run = compose_run([*model_overrides, f"trainer.max_epochs={epochs_count}", *variant.get("extra", [])],
                              scratch, store)
            with patched(variant.get("patches")):
                out[variant["name"]].append(medians(dlrun_path(run, epochs_count)))
    return out


RUNNERS = {"handwritten": handwritten, "lightning": vanilla_lightning, "dlrun": dlrun_path}


def run_loop(loop: str, model_overrides: list[str], epochs_count: int, threads: int, scratch: Path,
             device: str = "cpu", extra: list[str] | None = None, attribute: bool = False,
             store: str | None = None, variants: list[dict] | None = None, rounds: int = 1) -> dict:
    """One loop in this process (a fresh subprocess per loop, so that peak memory is its own);
    loop "variants": dlrun's path with each of `variants`, in `rounds` (see dlrun_variants)."""
    import torch

    torch.set_num_threads(threads)
    scratch.mkdir(parents=True, exist_ok=True)
    os.chdir(scratch)  # MLflow's ./mlruns and anything else relative lands in scratch
    store_path = Path(store) if store else None
    if loop == "variants":
        return {"variants": dlrun_variants(model_overrides, epochs_count, variants or [], rounds, scratch, store_path),
                "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}
    trainer = ["trainer=gpu"] if device.startswith("cuda") else []
    overrides = [*model_overrides, *trainer, f"trainer.max_epochs={epochs_count}", *(extra or [])]
    run = compose_run(overrides, scratch, store_path)
    result = (dlrun_path(run, epochs_count, device, attribute=True) if attribute
              else RUNNERS[loop](run, epochs_count, device))
    result.update(loop=loop, overrides=overrides, threads=torch.get_num_threads(), device=device,
                  batch_size=run.data["batch_size"], peak_rss_mib=peak_rss_mib())
    return result
