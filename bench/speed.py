"""Speed benchmark: dlrun against a hand-written loop and vanilla Lightning; start-up; sweeps.

    python -m bench.speed                       # full sizes, about 10 minutes on 2 cores
    python -m bench.speed --quick --out /tmp/b  # tiny sizes: shows that it works (tests/test_bench.py)
    python -m bench.speed --threads 1 --only loops startup

Run from the repository root; it writes OUT/speed.json and OUT/speed.md (OUT: bench/results).
Everything goes through dlrun's public commands and functions, in processes of their own:
- loops: bench/loops.py's three loops on the digits CNN and the wine MLP, taking turns in one
  process; per loop the median epoch after the first (warm-up), the least of the repeats, and
  the ratios between loops;
- startup: wall time of `dlrun --help`, `dlrun configs`, `dlrun train --cfg` and of
  `import pytorch_lightning, mlflow`, the median of the repeats;
- fixed: a one-epoch `dlrun train` of the digits CNN, its wall time less the epoch (from loops);
- sweeps: trials per minute of a `dlrun sweep` of short iris trials, against bench/optuna_peer.py (the
  same trials by hand with Optuna, PyTorch and MLflow); and a study of trials of at least 5 s with
  n_jobs 1 and 2;
- pruning: one study with the median pruner and without: training time and best value.
No figure is asserted; bench/report.py judges the targets met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import yaml

from bench import report

REPO = Path(__file__).resolve().parent.parent
MODELS = {"cnn": ["data=digits", "model=cnn"], "mlp": ["data=wine", "model=mlp"]}
SECTIONS = ("loops", "startup", "fixed", "sweeps", "pruning")

FULL = {"epochs": {"cnn": 12, "mlp": 40}, "repeats": 5, "startup_repeats": 5, "fixed_repeats": 3,
        "sweep": {"trials": 20, "epochs": 3, "long": {"trials": 8, "epochs": 50, "jobs": [1, 2]}},
        "pruning": {"trials": 20, "epochs": 15}}
QUICK = {"epochs": {"cnn": 2, "mlp": 2}, "repeats": 1, "startup_repeats": 1, "fixed_repeats": 1,
         "sweep": {"trials": 1, "epochs": 1, "long": None},  # the long study: two more of the same, not run
         "pruning": {"trials": 1, "epochs": 2}}


class Bench:
    def __init__(self, size: dict, threads: int, work: Path, device: str):
        self.size, self.threads, self.work, self.device = size, threads, work, device
        self.store = f"tracking.uri=sqlite:///{work / 'mlflow.db'}"  # one store for every dlrun run
        self.results: dict = {}

    def run(self, command: list[str], folder: str, timeout: float = 1800, checkout: bool = True) -> tuple[float, str]:
        """Wall time and stdout of a command run in work/folder; an error with its stderr if it fails.
        checkout: the repository on PYTHONPATH (for -m bench.*); False for an installed `dlrun` alone."""
        cwd = self.work / folder
        cwd.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
        env["OMP_NUM_THREADS"] = str(self.threads)  # torch's default thread count in `dlrun` processes
        if checkout:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
        return wall, done.stdout

    def loops(self) -> None:
        command = [sys.executable, "-m", "bench.loops", "--work", str(self.work), "--device", self.device,
                   "--repeats", str(self.size["repeats"]), "--threads", str(self.threads)]
        for model, overrides in MODELS.items():
            command += ["--config", " ".join([*overrides, f"trainer.max_epochs={self.size['epochs'][model]}"])]
        measured = json.loads(self.run(command, "loops")[1].splitlines()[-1])
        self.results["loops"] = {model: summarize(entry) for model, entry in zip(MODELS, measured)}

    def fresh_install(self) -> list[str] | None:
        """`dlrun` of a fresh, non-editable install of this checkout in a virtual environment that sees this
        Python's packages (the dependencies are not installed again); None where pip cannot make one."""
        venv = self.work / "venv"
        try:
            python = str(venv / "bin" / "python")
            self.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "install")
            # The venv's own setuptools is older than pyproject.toml needs; this Python's is used instead.
            self.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"], "install")
            self.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(REPO)],
                     "install", timeout=600)
        except (RuntimeError, subprocess.TimeoutExpired):
            return None
        return [str(venv / "bin" / "dlrun")]

    def startup(self) -> None:
        fresh = None if self.size["startup_repeats"] == 1 else self.fresh_install()  # a quick run: as installed
        dlrun = fresh or dlrun_command()
        commands = {"import pytorch_lightning, mlflow": [sys.executable, "-c", "import pytorch_lightning, mlflow"],
                    "dlrun --help": [*dlrun, "--help"], "dlrun configs": [*dlrun, "configs"],
                    "dlrun train --cfg": [*dlrun, "train", "--cfg"]}
        out = {"command": " ".join(dlrun), "install": "fresh, non-editable" if fresh else "as installed here"}
        for name, command in commands.items():
            if self.size["startup_repeats"] > 1:
                self.run(command, "startup", checkout=not fresh)  # warms the file cache; not counted
            walls = [self.run(command, "startup", checkout=not fresh)[0] for _ in range(self.size["startup_repeats"])]
            out[name] = {"median_s": statistics.median(walls), "runs_s": walls}
        self.results["startup"] = out

    def fixed(self) -> None:
        """What a one-epoch `dlrun train` costs beyond its epoch, on an existing store."""
        overrides = [*MODELS["cnn"], "trainer.max_epochs=1", f"output_dir={self.work / 'outputs'}"]
        walls = [self.run([*dlrun_command(), "train", *overrides, self.store], "fixed")[0]
                 for _ in range(self.size["fixed_repeats"])]
        wall = statistics.median(walls)
        epoch = report.get_path(self.results, "loops", "cnn", "loops", "dlrun", "first_epoch_ms")
        self.results["fixed"] = {"command": "dlrun train " + " ".join(overrides[:3]), "wall_s": wall, "runs_s": walls,
                                 "epoch_s": None if epoch is None else epoch / 1000,
                                 "fixed_s": None if epoch is None else wall - epoch / 1000}

    def study(self, name: str, trials: int, epochs: int, jobs: int, spec: dict) -> dict:
        """`dlrun sweep` of a sweep file written from spec: its wall time and what its journal holds."""
        folder = self.work / "sweeps" / name
        folder.mkdir(parents=True, exist_ok=True)
        path, journal = folder / f"{name}.yaml", folder / f"{name}.journal"
        path.write_text(yaml.safe_dump({"metric": "val/acc", "n_trials": trials, "seed": 0, **spec}))
        wall, _ = self.run([*dlrun_command(), "sweep", str(path), f"trainer.max_epochs={epochs}", self.store,
                            f"output_dir={folder / 'outputs'}", "--n-jobs", str(jobs), "--storage", str(journal)],
                           f"sweeps/{name}")
        return {"wall_s": wall, "trials_per_minute": 60 * trials / wall, **study_summary(journal, name)}

    def sweeps(self) -> None:
        """Short iris trials: dlrun sweep against the hand-written Optuna script, taking turns; then trials of
        at least 5 s (the digits CNN) with n_jobs 1 and 2."""
        size, long = self.size["sweep"], self.size["sweep"]["long"]
        assert long is None or long["jobs"][0] == 1  # the speed-up is against n_jobs 1
        spec = {"overrides": ["data=iris", "model=mlp"], "sampler": "tpe", "pruner": "none",
                "params": {"optim.lr": "tag(log, interval(1e-3, 1e-1))", "model.width": "choice(16, 32, 64)"}}
        peer_command = [sys.executable, "-m", "bench.optuna_peer", "--store", self.store.split("=", 1)[1],
                        "--trials", str(size["trials"]), "--epochs", str(size["epochs"])]

        def peer_run(index: int) -> dict:
            wall, out = self.run(peer_command, f"sweeps/peer-{index}")
            return {"wall_s": wall, "trials_per_minute": 60 * size["trials"] / wall, **json.loads(out.splitlines()[-1])}

        peer, dlrun = self.alternated(peer_run, lambda i: self.study(f"throughput-1-{i}", size["trials"],
                                                                     size["epochs"], 1, spec))
        self.results["sweeps"] = {"trials": size["trials"], "epochs": size["epochs"], "runs": {"1": dlrun},
                                  "peer": peer, "dlrun/peer": dlrun["trials_per_minute"] / peer["trials_per_minute"],
                                  "long": long and self.long_trials(long)}

    def long_trials(self, long: dict) -> dict:
        """The same study of trials of at least 5 s (the digits CNN) with each n_jobs: the throughput gained."""
        spec = {"overrides": ["data=digits", "model=cnn"], "sampler": "random", "pruner": "none",
                "params": {"optim.lr": "tag(log, interval(1e-3, 1e-2))"}}
        first_jobs, last_jobs = long["jobs"]
        first_run, last_run = self.alternated(
            *(lambda i, n=n: self.study(f"long-{n}-{i}", long["trials"], long["epochs"], n, spec)
              for n in (first_jobs, last_jobs)))
        runs = {str(first_jobs): first_run, str(last_jobs): last_run}
        first, last = runs[str(long["jobs"][0])], runs[str(long["jobs"][-1])]
        return {**long, "runs": runs, "speedup": last["trials_per_minute"] / first["trials_per_minute"],
                "fit_per_trial_s": first["fit_seconds"] / long["trials"]}

    def pruning(self) -> None:
        size = self.size["pruning"]
        def spec(pruner: str) -> dict:
            return {"overrides": ["data=digits", "model=mlp"], "sampler": "tpe", "pruner": pruner,
                    "params": {"optim.lr": "tag(log, interval(1e-4, 1e-1))", "model.width": "choice(16, 32, 64, 128)",
                               "regularization.dropout": "interval(0.0, 0.5)"}}

        pruned, unpruned = self.alternated(
            lambda i: self.study(f"pruned-{i}", size["trials"], size["epochs"], 1, spec("median")),
            lambda i: self.study(f"unpruned-{i}", size["trials"], size["epochs"], 1, spec("none")))
        studies = {"pruned": pruned, "unpruned": unpruned}
        self.results["pruning"] = {**size, "studies": studies, **compare_pruning(pruned, unpruned)}

    def alternated(self, run_a, run_b) -> tuple[dict, dict]:
        """run_a and run_b (each called with its turn, 0 or 1) in the order A B B A on a full run, A B on a
        quick one; each one's figures averaged over its turns. A load that rises or falls steadily while they
        run then weighs on both alike, not on whichever came second."""
        if self.size["repeats"] == 1:
            return run_a(0), run_b(0)
        a0, b0, b1, a1 = run_a(0), run_b(0), run_b(1), run_a(1)
        return averaged([a0, a1]), averaged([b0, b1])


def averaged(turns: list[dict]) -> dict:
    """One figure per key: the mean of the turns' numbers (the same study twice: trials, epochs, states and best
    value agree; times differ); the first turn's value for the rest; every turn under "turns"."""
    def mean(key):
        values = [t[key] for t in turns]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return statistics.mean(values) if numbers and len(set(values)) > 1 else values[0]

    return {**{key: mean(key) for key in turns[0]}, "turns": turns}


def compare_pruning(pruned: dict, unpruned: dict) -> dict:
    """What pruning saved, and how far apart the best values are (val/acc points; below 0: pruned is better)."""
    return {"fit_saving": 1 - pruned["fit_seconds"] / unpruned["fit_seconds"],
            "epoch_saving": 1 - pruned["epochs"] / unpruned["epochs"],
            "best_gap_points": 100 * (unpruned["best_value"] - pruned["best_value"])}


def summarize(entry: dict) -> dict:
    """One model: per loop the least over repeats of the median epoch after the first; the ratios."""
    def least_median(repeats: list[dict], key: str) -> float:
        return 1000 * min(statistics.median(e[key] for e in (r["epochs"][1:] or r["epochs"])) for r in repeats)

    loops = {loop: {"train_ms": least_median(repeats, "train"), "epoch_ms": least_median(repeats, "epoch"),
                    "first_epoch_ms": 1000 * min(r["epochs"][0]["epoch"] for r in repeats),
                    "val_acc": repeats[-1]["val_acc"]} for loop, repeats in entry["loops"].items()}
    ratios = {f"{a}/{b}": {k: loops[a][f"{k}_ms"] / loops[b][f"{k}_ms"] for k in ("train", "epoch")}
              for a, b in (("dlrun", "handwritten"), ("lightning", "handwritten"), ("dlrun", "lightning"),
                           ("lightning_floor", "handwritten")) if a in loops and b in loops}
    return {"overrides": entry["overrides"], "batch_size": entry["batch_size"], "threads": entry["threads"],
            "epochs": len(entry["loops"]["dlrun"][0]["epochs"]), "loops": loops, "ratios": ratios}


def study_summary(journal: Path, name: str) -> dict:
    """A finished study's trials by state, summed fit_seconds and epochs (dlrun's trial attributes), best value."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"trials": len(trials), "states": {s: states.count(s) for s in sorted(set(states))},
            "best_value": study.best_value,
            "fit_seconds": sum(float(t.user_attrs.get("fit_seconds", 0)) for t in trials),
            "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials)}


def dlrun_command() -> list[str]:
    """The console script beside this Python (not a shim with its own start-up), else `python -m dlrun`."""
    beside = Path(sys.executable).parent / "dlrun"
    found = str(beside) if beside.is_file() else shutil.which("dlrun")
    return [found] if found else [sys.executable, "-m", "dlrun"]


def environment(args) -> dict:
    versions = {}
    for package in ("torch", "pytorch-lightning", "mlflow", "optuna"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "cores": os.cpu_count(), "threads": args.threads,
            "device": args.device, "versions": versions, "quick": args.quick,
            "load_average_start": os.getloadavg()[0], "command": " ".join(["python -m bench.speed", *sys.argv[1:]])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to show that it works")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where speed.{json,md} go")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in every process")
    parser.add_argument("--device", default="cpu", help="the loops' device, e.g. cuda")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="sections to run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dlrun-bench-"))
    bench = Bench(QUICK if args.quick else FULL, args.threads, work, args.device)
    bench.results["environment"] = environment(args)
    started, errors, seconds = time.perf_counter(), {}, {}
    try:
        for section in (s for s in SECTIONS if s in args.only):
            section_started = time.perf_counter()
            try:
                getattr(bench, section)()
            except Exception as error:  # one broken section must not lose the others' figures
                errors[section] = f"{type(error).__name__}: {error}"
            seconds[section] = time.perf_counter() - section_started
            print(f"{section}: {seconds[section]:.0f} s {errors.get(section, '')}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.results["environment"].update(load_average_end=os.getloadavg()[0], seconds=time.perf_counter() - started,
                                        section_seconds=seconds)
    bench.results["errors"] = errors
    bench.results["targets"] = report.targets(bench.results)
    (args.out / "speed.json").write_text(json.dumps(bench.results, indent=2) + "\n", encoding="utf-8")
    (args.out / "speed.md").write_text(report.markdown(bench.results), encoding="utf-8")
    print(report.targets_table(bench.results["targets"]))
    print(f"wrote {args.out / 'speed.json'} and {args.out / 'speed.md'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
