"""Speed benchmark of issue #6: dlrun's training path against a hand-written loop and vanilla Lightning.

    python bench/speed.py                      # the full benchmark (about 12 minutes on 2 idle cores)
    python bench/speed.py --quick --out /tmp/b # tiny sizes: shows that it works, the figures mean little
    python bench/speed.py --threads 1          # torch threads in every process (default: the cores)
    python bench/speed.py --skip sweeps pruning scaling --repeats 3 --rounds 3

For the digits CNN and the wine MLP (the `model=cnn` and `model=mlp` configs), with the same data,
batch size, epochs, seed and torch thread count, it times (bench/loops.py):
1. a hand-written PyTorch loop over whole batches indexed from in-memory tensors (the limit);
2. vanilla Lightning with TensorDataset + DataLoader;
3. dlrun's own training path, `dlrun.train.run.train` as `dlrun train` calls it, MLflow logging on;
each in its own process (peak memory is per process), and reports per-epoch time (median of the
epochs after a warm-up epoch; the least of the repeats), the ratios 3/1 and 2/1 and peak memory.
Then: where dlrun's per-epoch time goes (timers around its pieces, in a separate run) and what
trainer overrides and what-if patches of dlrun's path (applied in the timed process only) would
buy; the start-up time of `dlrun --help`, `dlrun configs` and `dlrun train --cfg`; the fixed cost
of a `dlrun train` (process start to first batch, last batch to exit); the time spent in MLflow
logging; trials per minute of a small sweep with n_jobs 1 and 2; a 20-trial study pruned and
unpruned; per-epoch time against data size and model width; on a machine with a GPU, samples per
second there. It prints a table and writes OUT/speed.json and OUT/speed.md (default OUT:
bench/results). Nothing is written outside OUT but a temporary folder, removed at the end.
No figure is asserted anywhere: the targets are judged in the table, met or missed.

Timings are only as good as the machine is quiet: with several torch threads, another busy process
can stall OpenMP's threads many-fold; the script warns when the load average is high.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # run from a checkout: leave no __pycache__ behind

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.loops import LOOPS, MODELS  # noqa: E402

MARK = "BENCH-RESULT "


# ---------------------------------------------------------------------------------------------
# sizes


def sizes(quick: bool) -> dict:
    """How much of everything: the full run, or a tiny one that only shows the script works."""
    if quick:
        return {"epochs": {"cnn": 3, "mlp": 3}, "repeats": 1, "startup_repeats": 1, "fixed_repeats": 1,
                "variants": [VARIANTS[0], VARIANTS[-1]], "variant_rounds": 1, "attribute": ["mlp"],
                "sweep": {"trials": 2, "epochs": 1}, "pruning": {"trials": 3, "epochs": 2},
                "scaling": {"rows": [1000, 2000], "widths": [32], "width_rows": 1000, "epochs": 2,
                            "batch_size": 256}}
    return {"epochs": {"cnn": 12, "mlp": 40}, "repeats": 2, "startup_repeats": 5, "fixed_repeats": 2,
            "variants": VARIANTS, "variant_rounds": 2,
            "attribute": ["cnn", "mlp"],
            "sweep": {"trials": 6, "epochs": 3}, "pruning": {"trials": 20, "epochs": 15},
            "scaling": {"rows": [10_000, 100_000, 1_000_000], "widths": [64, 256, 1024], "width_rows": 20_000,
                        "epochs": 3, "batch_size": 256}}


# dlrun's path with one change at a time (trainer overrides, or a what-if patch from bench/loops.py applied
# in the timed process only), then all of them: what each suggested change to dlrun would buy.
AS_IS = "as is"
VARIANTS = [
    {"name": AS_IS},
    {"name": "trainer.enable_progress_bar=false", "extra": ["trainer.enable_progress_bar=false"]},
    {"name": "trainer.deterministic=false", "extra": ["trainer.deterministic=false"]},
    {"name": "lean training_step: train/loss summed, logged and checked once an epoch", "patches": ["lean_step"]},
    {"name": "per-epoch MLflow metrics asynchronous", "patches": ["async_mlflow"]},
    {"name": "checkpoints kept in memory, written when fit ends", "patches": ["checkpoint_at_end"]},
    {"name": "all of the above", "extra": ["trainer.enable_progress_bar=false", "trainer.deterministic=false"],
     "patches": ["lean_step", "async_mlflow", "checkpoint_at_end"]},
]

SECTIONS = ("loops", "profile", "startup", "fixed", "sweeps", "pruning", "scaling", "gpu")


# ---------------------------------------------------------------------------------------------
# processes


THREADS = {"count": os.cpu_count() or 1}  # --threads, for every child process (set in main)


def child_env() -> dict:
    """The environment of every child: no tracking server, no bytecode files, and the benchmark's torch
    thread count as OpenMP's default (`dlrun train` and `dlrun sweep` take torch's default from it)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(THREADS["count"])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def timed_run(command: list[str], cwd: Path, timeout: float = 1800) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    return time.perf_counter() - started, done


def dlrun_command() -> list[str]:
    """The console script beside this Python (not a shim that adds its own start-up), else `python -m dlrun`."""
    beside = Path(sys.executable).parent / "dlrun"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("dlrun")
    return [found] if found else [sys.executable, "-m", "dlrun"]


def worker(spec: dict, cwd: Path, timeout: float = 1800) -> dict:
    """One loop in a fresh process (this script with --worker); its result dict."""
    wall, done = timed_run([sys.executable, str(BENCH / "speed.py"), "--worker", json.dumps(spec)], cwd, timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
            result["process_seconds"] = wall
            return result
    raise RuntimeError(f"worker {spec} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def run_worker(spec: dict) -> None:
    """--worker: run one loop here and print its result as one JSON line."""
    from bench import loops

    result = loops.run_loop(spec["loop"], spec["overrides"], spec["epochs"], spec["threads"], Path(spec["scratch"]),
                            device=spec.get("device", "cpu"), extra=spec.get("extra"),
                            attribute=spec.get("attribute", False), store=spec.get("store"),
                            variants=spec.get("variants"), rounds=spec.get("rounds", 1))
    print(MARK + json.dumps(result), flush=True)


def median_of(epochs: list[dict], key: str, warmup: int = 1) -> float:
    measured = epochs[warmup:] or epochs
    return statistics.median(e[key] for e in measured)


def summarize(results: list[dict]) -> dict:
    """The repeats of one loop: per-epoch medians of each repeat, and the least of them."""
    per_repeat = [{k: median_of(r["epochs"], k) for k in ("train", "rest", "epoch")} for r in results]
    best = {k: min(p[k] for p in per_repeat) for k in ("train", "rest", "epoch")}
    last = results[-1]
    return {
        "train_ms": 1000 * best["train"], "rest_ms": 1000 * best["rest"], "epoch_ms": 1000 * best["epoch"],
        "repeats_ms": [{k: 1000 * v for k, v in p.items()} for p in per_repeat],
        "epochs": len(last["epochs"]), "batch_size": last["batch_size"], "threads": last["threads"],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
        "rss_at_fit_start_mib": last.get("rss_at_fit_start_mib"),
        "final": last.get("final", {}),
        "train_rows": last.get("train_rows"),
    }


# ---------------------------------------------------------------------------------------------
# sections


class Bench:
    def __init__(self, args, scratch: Path):
        self.args = args
        self.quick = args.quick
        self.size = sizes(args.quick)
        if args.repeats:
            self.size["repeats"] = args.repeats
        if args.rounds:
            self.size["variant_rounds"] = args.rounds
        self.scratch = scratch
        self.threads = args.threads
        self.store = scratch / "store"  # one MLflow store for every dlrun run, created once (see prime_store)
        self.results: dict = {}

    def log(self, text: str) -> None:
        print(text, flush=True)

    def folder(self, name: str) -> Path:
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spec(self, loop: str, model_overrides: list[str], epochs: int, name: str, **more) -> dict:
        return {"loop": loop, "overrides": model_overrides, "epochs": epochs, "threads": self.threads,
                "scratch": str(self.folder(name)), "store": str(self.store), **more}

    # -- the MLflow store ---------------------------------------------------------------------

    def prime_store(self) -> None:
        """Create the SQLite store once, in its own process, and time it: a first `dlrun train` in an
        empty folder pays this; every later run opens an existing store. All timed runs share it."""
        self.store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{self.store / 'mlflow.db'}"
        code = ("import time; t0 = time.perf_counter(); from mlflow.tracking import MlflowClient; "
                "t1 = time.perf_counter(); from dlrun.tracking.record import RunRecord; "
                f"RunRecord({uri!r}, 'dlrun'); print(t1 - t0, time.perf_counter() - t1)")
        _, done = timed_run([sys.executable, "-c", code], self.store)
        if done.returncode != 0:
            raise RuntimeError(f"creating the MLflow store failed:\n{done.stderr[-2000:]}")
        imports, create = map(float, done.stdout.split()[-2:])
        self.results["store"] = {"create_seconds": create, "mlflow_import_seconds": imports}
        self.log(f"MLflow store: creating a new SQLite store takes {create:.2f} s after `import mlflow` "
                 f"({imports:.2f} s); a first run in an empty folder pays it once")

    # -- 1, 2, 3: the loops -------------------------------------------------------------------

    def loops(self) -> None:
        out: dict = {}
        for model, overrides in MODELS.items():
            epochs = self.size["epochs"][model]
            runs: dict[str, list[dict]] = {loop: [] for loop in LOOPS}
            for repeat in range(self.size["repeats"]):
                for loop in LOOPS:
                    self.log(f"  {model}: {loop} ({epochs} epochs, repeat {repeat + 1}/{self.size['repeats']})")
                    runs[loop].append(worker(self.spec(loop, overrides, epochs, f"loops/{model}-{loop}-{repeat}"),
                                             self.scratch))
            summary = {loop: summarize(runs[loop]) for loop in LOOPS}
            dl = runs["dlrun"]
            summary["dlrun"].update(
                fit_seconds=min(r["fit_seconds"] for r in dl),
                tracking=_least_tracking(dl),
                mlflow_seconds=min(r["mlflow_seconds"] for r in dl),
                mlflow_fit_seconds=min(r["mlflow_fit_seconds"] for r in dl),
                mlflow_import_seconds=min(r["mlflow_import_seconds"] for r in dl),
                after_last_batch=min(r["after_last_batch"] for r in dl),
                first_batch_after_start=min(r["first_batch_after_start"] for r in dl),
            )
            hand = summary["handwritten"]
            ratios = {f"{loop}/handwritten": {k: summary[loop][f"{k}_ms"] / hand[f"{k}_ms"] for k in ("train", "epoch")}
                      for loop in ("dlrun", "lightning")}
            out[model] = {"overrides": overrides, "epochs": epochs, "loops": summary, "ratios": ratios}
            self.log(report.loops_text(model, out[model]))
        self.results["loops"] = out

    # -- where dlrun's epoch goes -------------------------------------------------------------

    def profile(self) -> None:
        out: dict = {}
        for model in self.size["attribute"]:
            overrides, epochs = MODELS[model], self.size["epochs"][model]
            self.log(f"  {model}: dlrun with timers around its pieces")
            result = worker(self.spec("dlrun", overrides, epochs, f"profile/{model}", attribute=True), self.scratch)
            out[model] = {"attribution_ms": result["attribution_ms"], "calls": result["attribution_calls"],
                          "attributed_epochs": result["attributed_epochs"],
                          "epoch_ms": result["attributed_epoch_ms"], "variants": {}}
            variants, rounds = self.size["variants"], self.size["variant_rounds"]
            if variants:
                self.log(f"  {model}: dlrun as is and with {len(variants) - 1} changes, {rounds} rounds in one process")
                timed = worker(self.spec("variants", overrides, epochs, f"profile/{model}-variants",
                                         variants=variants, rounds=rounds), self.scratch)["variants"]
                hand = report.get_path(self.results, "loops", model, "loops", "handwritten")
                as_is = {k: min(r[k] for r in timed[AS_IS]) for k in ("train", "epoch")}
                for variant in variants:
                    best = {k: min(r[k] for r in timed[variant["name"]]) for k in ("train", "epoch")}
                    entry = {"train_ms": 1000 * best["train"], "epoch_ms": 1000 * best["epoch"],
                             "rounds_ms": [{k: 1000 * v for k, v in r.items()} for r in timed[variant["name"]]],
                             "extra": variant.get("extra", []), "patches": variant.get("patches", []),
                             "train_vs_as_is": best["train"] / as_is["train"],
                             "epoch_vs_as_is": best["epoch"] / as_is["epoch"]}
                    if hand:
                        entry.update(train_ratio=entry["train_ms"] / hand["train_ms"],
                                     epoch_ratio=entry["epoch_ms"] / hand["epoch_ms"])
                    out[model]["variants"][variant["name"]] = entry
            self.log(report.profile_text(model, out[model], report.get_path(self.results, "loops", model)))
        self.results["profile"] = out

    # -- start-up ------------------------------------------------------------------------------

    def startup(self) -> None:
        folder = self.folder("startup")
        dlrun = dlrun_command()
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import pytorch_lightning, mlflow": [sys.executable, "-c", "import pytorch_lightning, mlflow"],
            "dlrun --help": [*dlrun, "--help"],
            "dlrun configs": [*dlrun, "configs"],
            "dlrun train --cfg": [*dlrun, "train", "--cfg"],
        }
        out = {}
        for name, command in commands.items():
            if not self.quick:
                timed_run(command, folder)  # warm the file cache; not counted
            walls = []
            for _ in range(self.size["startup_repeats"]):
                wall, done = timed_run(command, folder)
                if done.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
                walls.append(wall)
            out[name] = {"median_s": statistics.median(walls), "runs_s": walls}
        out["command"] = " ".join(dlrun)
        self.results["startup"] = out
        self.log(report.startup_text(out))

    # -- fixed cost of dlrun train ------------------------------------------------------------

    def fixed(self) -> None:
        folder = self.folder("fixed")
        overrides = ["data=digits", "model=cnn", "trainer.max_epochs=1",
                     f"tracking.uri=sqlite:///{self.store / 'mlflow.db'}"]
        runs = []
        for repeat in range(self.size["fixed_repeats"]):
            marks_file = folder / f"marks-{repeat}.json"
            command = [sys.executable, "-c", FIXED_COST_CHILD, str(marks_file), *overrides]
            spawned = time.time()
            _, done = timed_run(command, folder)
            exited = time.time()
            if done.returncode != 0:
                raise RuntimeError(f"dlrun train (fixed cost) failed:\n{done.stderr[-3000:]}")
            marks = json.loads(marks_file.read_text())
            runs.append(fixed_cost_breakdown(marks, spawned, exited))
        best = min(runs, key=lambda r: r["fixed_s"])
        imports = self.results.get("startup", {}).get("import pytorch_lightning, mlflow", {}).get("median_s")
        if imports is None:
            imports = statistics.median(timed_run([sys.executable, "-c", "import pytorch_lightning, mlflow"],
                                                  folder)[0] for _ in range(2))
        self.results["fixed"] = {"command": "dlrun train " + " ".join(overrides[:3]), "best": best, "runs": runs,
                                 "import_pl_mlflow_s": imports,
                                 "store_create_s": self.results.get("store", {}).get("create_seconds")}
        self.log(report.fixed_text(self.results["fixed"]))

    # -- sweeps -------------------------------------------------------------------------------

    def sweeps(self) -> None:
        size = self.size["sweep"]
        folder = self.folder("sweeps")
        path = folder / "throughput.yaml"
        path.write_text(SWEEP_THROUGHPUT.format(trials=size["trials"], epochs=size["epochs"]))
        out = {"trials": size["trials"], "epochs": size["epochs"], "file": path.read_text(), "runs": {}}
        for jobs in (1, 2):
            cwd = self.folder(f"sweeps/jobs-{jobs}")
            self.log(f"  sweep of {size['trials']} trials with --n-jobs {jobs}")
            wall, done = timed_run([*dlrun_command(), "sweep", str(path), f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}",
                                    "--n-jobs", str(jobs), "--study-name", f"throughput-{jobs}"], cwd)
            if done.returncode != 0:
                raise RuntimeError(f"dlrun sweep --n-jobs {jobs} failed:\n{done.stderr[-3000:]}")
            out["runs"][str(jobs)] = {"wall_s": wall, "trials_per_minute": 60 * size["trials"] / wall}
        self.results["sweeps"] = out
        self.log(report.sweeps_text(out))

    def pruning(self) -> None:
        size = self.size["pruning"]
        folder = self.folder("pruning")
        out = {"trials": size["trials"], "epochs": size["epochs"], "studies": {}}
        for pruner in ("median", "none"):
            name = "pruned" if pruner == "median" else "unpruned"
            path = folder / f"{name}.yaml"
            path.write_text(SWEEP_PRUNING.format(trials=size["trials"], epochs=size["epochs"], pruner=pruner))
            cwd = self.folder(f"pruning/{name}")
            self.log(f"  study of {size['trials']} trials, pruner {pruner}")
            wall, done = timed_run([*dlrun_command(), "sweep", str(path), "--n-jobs", "1"], cwd)
            if done.returncode != 0:
                raise RuntimeError(f"dlrun sweep ({name}) failed:\n{done.stderr[-3000:]}")
            out["studies"][name] = study_summary(cwd / "optuna" / f"{name}.journal", name)
            out["studies"][name]["wall_s"] = wall
            out["file_" + name] = path.read_text()
        pruned, unpruned = out["studies"]["pruned"], out["studies"]["unpruned"]
        out["fit_saving"] = 1 - pruned["fit_seconds"] / unpruned["fit_seconds"] if unpruned["fit_seconds"] else None
        out["epoch_saving"] = 1 - pruned["epochs"] / unpruned["epochs"] if unpruned["epochs"] else None
        out["best_gap_points"] = (100 * abs(pruned["best_value"] - unpruned["best_value"])
                                  if None not in (pruned["best_value"], unpruned["best_value"]) else None)
        out["pruned_better_or_equal"] = (pruned["best_value"] or 0) >= (unpruned["best_value"] or 0)
        self.results["pruning"] = out
        self.log(report.pruning_text(out))

    # -- scaling ------------------------------------------------------------------------------

    def scaling(self) -> None:
        size = self.size["scaling"]
        base = ["data=blobs", "model=mlp", f"data.batch_size={size['batch_size']}"]
        out = {"batch_size": size["batch_size"], "epochs": size["epochs"], "rows": {}, "widths": {}}
        for rows in size["rows"]:
            entry = {}
            for loop in ("handwritten", "dlrun"):
                self.log(f"  blobs {rows} rows: {loop}")
                entry[loop] = summarize([worker(self.spec(loop, [*base, f"data.n_samples={rows}"], size["epochs"],
                                                          f"scaling/rows-{rows}-{loop}"), self.scratch)])
            out["rows"][str(rows)] = entry
        for width in size["widths"]:
            entry = {}
            for loop in ("handwritten", "dlrun"):
                self.log(f"  blobs {size['width_rows']} rows, model.width={width}: {loop}")
                entry[loop] = summarize([worker(self.spec(
                    loop, [*base, f"data.n_samples={size['width_rows']}", f"model.width={width}"], size["epochs"],
                    f"scaling/width-{width}-{loop}"), self.scratch)])
            out["widths"][str(width)] = entry
        out["width_rows"] = size["width_rows"]
        out["linearity"] = linearity(out["rows"])
        self.results["scaling"] = out
        self.log(report.scaling_text(out))

    # -- GPU ----------------------------------------------------------------------------------

    def gpu(self) -> None:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True, env=child_env(), check=False)
        if probe.stdout.strip() != "True":
            self.results["gpu"] = {"available": False, "note": "no GPU"}
            self.log("GPU: no GPU")
            return
        out = {"available": True, "models": {}}
        for model, overrides in MODELS.items():
            epochs = self.size["epochs"][model]
            entry = {}
            for loop in ("handwritten", "dlrun"):
                self.log(f"  GPU {model}: {loop}")
                try:
                    result = summarize([worker(self.spec(loop, overrides, epochs, f"gpu/{model}-{loop}",
                                                         device="cuda"), self.scratch)])
                    entry[loop] = {**result, "samples_per_s": result["train_rows"] / (result["train_ms"] / 1000)}
                except RuntimeError as error:
                    entry[loop] = {"error": str(error)[-1500:]}
            if "samples_per_s" in entry.get("handwritten", {}) and "samples_per_s" in entry.get("dlrun", {}):
                entry["ratio"] = entry["handwritten"]["samples_per_s"] / entry["dlrun"]["samples_per_s"]
            out["models"][model] = entry
        self.results["gpu"] = out
        self.log(report.gpu_text(out))


def _least_tracking(runs: list[dict]) -> dict[str, float]:
    names = set().union(*(r["tracking_seconds"] for r in runs))
    return {n: min(r["tracking_seconds"].get(n, 0.0) for r in runs) for n in sorted(names)}


def linearity(rows: dict) -> dict:
    """Per-row training time at each size; the ratio of the per-row times of the two largest sizes."""
    sizes_ = sorted(int(n) for n in rows)
    out = {}
    for loop in ("handwritten", "dlrun"):
        per_row = {str(n): 1000 * rows[str(n)][loop]["train_ms"] / rows[str(n)][loop]["train_rows"] for n in sizes_}
        ratio = per_row[str(sizes_[-1])] / per_row[str(sizes_[-2])] if len(sizes_) > 1 else None
        out[loop] = {"us_per_row": per_row, "largest_vs_next": ratio}
    return out


def study_summary(journal: Path, name: str) -> dict:
    """Trials, their summed fit_seconds and the best value, read from the study's journal."""
    import optuna

    from dlrun.sweep.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(str(journal)))
    trials = study.get_trials(deepcopy=False)
    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    try:
        best = study.best_value
    except ValueError:
        best = None
    return {"trials": len(trials), "states": states, "best_value": best,
            "fit_seconds": sum(float(t.user_attrs.get("fit_seconds") or 0) for t in trials),
            "epochs": sum(int(t.user_attrs.get("epochs") or 0) for t in trials)}


def fixed_cost_breakdown(marks: dict, spawned: float, exited: float) -> dict:
    """Seconds between the marks of a `dlrun train` child; spawned and exited are the parent's clock."""
    rel = {k: v - spawned for k, v in marks.items()}
    rel["exit"] = exited - spawned
    first, last, total = rel["first_batch"], rel["last_batch_end"], rel["exit"]
    chain = [  # (mark, what happened since the previous mark)
        ("cli_imported", "python start, import dlrun.cli"),
        ("train_called", "parse, compose, validate (to train())"),
        ("lightning_imported", "import pytorch_lightning"),
        ("prepare_start", "(train's own imports)"),
        ("prepare_end", "data and model (prepare: load, split, scale, build)"),
        ("store_open_start", "build the Trainer"),
        ("store_open_end", "import mlflow, open the store (RunRecord())"),
        ("run_created", "create the run: params, tags, config.yaml"),
        ("fit_start", "loaders, fit setup (to fit start)"),
        ("first_batch", "sanity validation (to the first batch)"),
        ("last_batch_end", "the epoch's training batches"),
        ("fit_end", "last validation, checkpoints (to fit end)"),
        ("test_end", "test (best checkpoint)"),
        ("log_model_start", "plots, checkpoint artifacts (to model logging)"),
        ("log_model_end", "log the model (mlflow.pytorch.log_model)"),
        ("summary_printed", "end the run, print the summary"),
        ("atexit_last", "atexit handlers"),
        ("exit", "interpreter shutdown"),
    ]
    out, previous = {}, 0.0
    for mark, label in chain:
        if mark in rel:
            out[label] = rel[mark] - previous
            previous = rel[mark]
    return {
        "total_s": total,
        "start_to_first_batch_s": first,
        "last_batch_to_exit_s": total - last,
        "fixed_s": first + (total - last),
        "steps_s": out,
        "marks_s": rel,
    }


# The child of the fixed-cost measurement: `dlrun train ARGS` through the console script's own entry
# point, with train() wrapped to add one callback that writes wall-clock marks (time.time()).
FIXED_COST_CHILD = r"""
import json, sys, time
marks = {"python_started": time.time()}
out, args = sys.argv[1], sys.argv[2:]
import atexit
atexit.register(lambda: (marks.__setitem__("atexit_last", time.time()), open(out, "w").write(json.dumps(marks))))
from dlrun.cli import main
marks["cli_imported"] = time.time()

def marked(owner, name, before, after):
    original = getattr(owner, name)
    def wrapper(*a, **k):
        if before: marks.setdefault(before, time.time())
        try:
            return original(*a, **k)
        finally:
            if after: marks.setdefault(after, time.time())
    setattr(owner, name, wrapper)

import dlrun.train.run as run_module, dlrun.train.setup as setup_module, dlrun.tracking.record as record_module
import dlrun.summary as summary_module
marked(setup_module, "prepare", "prepare_start", "prepare_end")
marked(record_module.RunRecord, "__init__", "store_open_start", "store_open_end")
marked(record_module.RunRecord, "start", None, "run_created")
marked(record_module.RunRecord, "log_model", "log_model_start", "log_model_end")
marked(summary_module, "print_summary", None, "summary_printed")
original = run_module.train
def train(run, *a, callbacks=None, **k):
    marks["train_called"] = time.time()
    import pytorch_lightning as pl
    marks["lightning_imported"] = time.time()
    class Marks(pl.Callback):
        def on_fit_start(self, trainer, module): marks["fit_start"] = time.time()
        def on_train_batch_start(self, trainer, module, batch, i): marks.setdefault("first_batch", time.time())
        def on_train_batch_end(self, trainer, module, outputs, batch, i): marks["last_batch_end"] = time.time()
        def on_fit_end(self, trainer, module): marks["fit_end"] = time.time()
        def on_test_start(self, trainer, module): marks["test_start"] = time.time()
        def on_test_end(self, trainer, module): marks["test_end"] = time.time()
    result = original(run, *a, callbacks=[*(callbacks or []), Marks()], **k)
    marks["train_returned"] = time.time()
    return result
run_module.train = train
sys.argv = ["dlrun", "train", *args]
main()
"""

SWEEP_THROUGHPUT = """\
# Trials per minute: a small study of full dlrun train runs
overrides: [data=iris, model=mlp, trainer.max_epochs={epochs}]
metric: val/acc
n_trials: {trials}
sampler: random
pruner: none
n_jobs: 1
seed: 0
params:
  optim.lr: tag(log, interval(1e-3, 1e-1))
  model.width: choice(16, 32, 64)
"""

SWEEP_PRUNING = """\
# The same study, pruned or not: the digits MLP
overrides: [data=digits, model=mlp, trainer.max_epochs={epochs}]
metric: val/acc
direction: maximize
n_trials: {trials}
sampler: tpe
pruner: {pruner}
n_jobs: 1
seed: 0
params:
  optim.lr: tag(log, interval(1e-4, 1e-1))
  model.width: choice(16, 32, 64, 128)
  regularization.dropout: interval(0.0, 0.5)
"""


# ---------------------------------------------------------------------------------------------


def environment(args) -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "pytorch-lightning", "mlflow", "optuna", "torchmetrics"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count(),
            "threads": args.threads, "versions": versions, "load_average_start": os.getloadavg(),
            "quick": args.quick, "command": " ".join(["python", "bench/speed.py", *sys.argv[1:]])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to show that it works (the test uses it)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="where speed.json and speed.md go")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in every timed process")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each loop; the least median counts")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over dlrun's variants (profile section)")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0

    THREADS["count"] = args.threads
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dlrun-bench-"))
    bench = Bench(args, scratch)
    bench.results["environment"] = environment(args)
    load = os.getloadavg()[0]
    bench.log(f"dlrun speed benchmark: {os.cpu_count()} cores, {args.threads} torch threads, "
              f"{'quick' if args.quick else 'full'} sizes; scratch {scratch}")
    if load > 0.5:
        bench.log(f"warning: the machine is busy (load average {load:.1f}): timings will be noisy. With several "
                  "torch threads, a competing process can stall OpenMP many-fold; --threads 1 is steadier.")
    started = time.perf_counter()
    errors = {}
    try:
        bench.prime_store()
        for section in SECTIONS:
            if section in args.skip:
                continue
            bench.log(f"== {section}")
            section_started = time.perf_counter()
            try:
                getattr(bench, section)()
            except Exception as error:  # one broken section must not lose the others' figures
                errors[section] = f"{type(error).__name__}: {error}"
                bench.log(f"error in {section}: {errors[section]}")
            bench.results.setdefault("section_seconds", {})[section] = time.perf_counter() - section_started
    finally:
        bench.results["environment"]["load_average_end"] = os.getloadavg()
        bench.results["environment"]["seconds"] = time.perf_counter() - started
        bench.results["errors"] = errors
        bench.results["targets"] = report.targets(bench.results)
        (out / "speed.json").write_text(json.dumps(bench.results, indent=2, default=str) + "\n", encoding="utf-8")
        (out / "speed.md").write_text(report.markdown(bench.results), encoding="utf-8")
        if args.keep:
            bench.log(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    bench.log(report.targets_text(bench.results["targets"]))
    bench.log(f"wrote {out / 'speed.json'} and {out / 'speed.md'} ({bench.results['environment']['seconds']:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
