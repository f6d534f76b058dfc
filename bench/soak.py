"""Soak test: many tiny `dlrun train` runs in one process keep memory flat and the store consistent.

    python -m bench.soak                      # 200 runs of one iris epoch each (3 to 10 minutes on 2 cores)
    python -m bench.soak --runs 5 --settle 2 --out /tmp/s   # tiny: shows that it works (the test uses it)
    nice python -m bench.soak --keep          # keep the work folder (its store and outputs) to look inside

Run from the repository root.
Each run is `dlrun train data=iris trainer.max_epochs=1 seed=I` invoked through dlrun's own command
(Typer's CliRunner on `dlrun.cli.app`, so composition, validation, training, MLflow logging with the
served model, and the summary all run as a user's `dlrun train` does), one after another in this
process. After each run the resident memory of this process and any children is read from /proc.

Checks, each printed with its figures and written to OUT/soak.json and OUT/soak.md:
- every run exited 0;
- memory is flat: the resident memory after the last run exceeds that after run --settle (the first
  runs fill caches: imports, MLflow's store connection, torch's allocator) by at most --max-growth-mib;
- the store is consistent: the experiment holds exactly the runs made, each FINISHED, each with
  train/loss, val/loss and its test metrics, a dlrun.model_uri tag, and that model logged by that run
  with its MLmodel file among the model's artifacts.
Exit 0 when every check holds, 1 otherwise. The work folder (a temporary one unless --work) is removed
at the end unless --keep or --work is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

RUN = ["train", "data=iris", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
REQUIRED_METRICS = ("train/loss", "val/loss", "test/loss", "test/acc")  # iris is a classification set
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------------------------------------
# memory, from /proc (no psutil dependency)


def rss_bytes(pid: int) -> int:
    """Resident memory of one process; 0 if it has gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid: int) -> list[int]:
    """Every live process below pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_mib(pid: int | None = None) -> float:
    """Resident memory of pid (default: this process) and all its descendants, MiB."""
    pid = pid or os.getpid()
    return sum(rss_bytes(p) for p in [pid, *descendants(pid)]) / 2**20


# ---------------------------------------------------------------------------------------------
# the runs


def run_all(runs: int, log) -> list[dict]:
    """`dlrun train` runs times in this process; each entry: run id, exit code, seconds, memory after."""
    from typer.testing import CliRunner

    from dlrun.cli import app

    runner = CliRunner()
    made = []
    for index in range(runs):
        started = time.perf_counter()
        result = runner.invoke(app, [*RUN, f"seed={index}"])
        lines = result.output.strip().splitlines()
        run_id = lines[-1].removeprefix("run_id: ") if lines and lines[-1].startswith("run_id: ") else None
        entry = {"index": index, "exit_code": result.exit_code, "run_id": run_id,
                 "seconds": round(time.perf_counter() - started, 2), "rss_mib": round(tree_rss_mib(), 1)}
        if result.exit_code != 0:
            entry["error"] = (result.output + repr(result.exception))[-1500:]
        made.append(entry)
        log(f"run {index + 1}/{runs}: exit {result.exit_code}, {entry['seconds']:.1f} s, "
            f"rss {entry['rss_mib']:.1f} MiB")
    return made


# ---------------------------------------------------------------------------------------------
# the checks


def check_exits(made: list[dict]) -> dict:
    failed = [m["index"] for m in made if m["exit_code"] != 0 or not m["run_id"]]
    return {"ok": not failed, "detail": f"{len(made) - len(failed)} of {len(made)} runs exited 0"
            + (f"; failed: {failed[:20]}" if failed else "")}


def check_memory(made: list[dict], settle: int, max_growth_mib: float) -> dict:
    """Growth from the run numbered settle to the last, against the bound; the slope over those runs."""
    rss = [m["rss_mib"] for m in made]
    if len(rss) <= settle:
        return {"ok": False, "detail": f"only {len(rss)} runs: need more than --settle {settle}"}
    after_settle, last = rss[settle - 1], rss[-1]
    growth = last - after_settle
    tail = rss[settle - 1:]
    slope = _slope(tail) * 1024  # KiB per run
    return {"ok": growth <= max_growth_mib, "settle_run": settle, "rss_after_settle_mib": after_settle,
            "rss_last_mib": last, "rss_peak_mib": max(rss), "rss_first_mib": rss[0], "growth_mib": round(growth, 1),
            "bound_mib": max_growth_mib, "slope_kib_per_run": round(slope, 1),
            "detail": f"rss after run {settle}: {after_settle:.1f} MiB, after run {len(rss)}: {last:.1f} MiB, "
                      f"growth {growth:+.1f} MiB (bound {max_growth_mib:g}), slope {slope:+.1f} KiB/run"}


def _slope(values: list[float]) -> float:
    """Least-squares slope of values against their index."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    covariance = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return covariance / sum((i - mean_x) ** 2 for i in range(n))


def check_store(uri: str, run_ids: list[str], experiment: str = "dlrun") -> dict:
    """Exactly these runs in the experiment, each FINISHED with its metrics, its model tag and that model."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=50_000) if found else []
    problems = []
    stored_ids = {r.info.run_id for r in runs}
    if stored_ids != set(run_ids):
        problems.append(f"the store holds {len(stored_ids)} runs, {len(set(run_ids))} were made "
                        f"(missing {len(set(run_ids) - stored_ids)}, extra {len(stored_ids - set(run_ids))})")
    for run in runs:
        problems += [f"run {run.info.run_id}: {p}" for p in run_problems(client, run)]
    return {"ok": not problems, "runs": len(runs), "problems": problems[:50],
            "detail": f"{len(runs)} runs in the store, {len(problems)} problems"
            + (f"; first: {problems[0]}" if problems else "")}


def run_problems(client, run) -> list[str]:
    """What is wrong with one stored run: status, metrics, model tag, the model itself."""
    problems = []
    if run.info.status != "FINISHED":
        problems.append(f"status {run.info.status}")
    missing = [m for m in REQUIRED_METRICS if m not in run.data.metrics]
    if missing:
        problems.append(f"lacks metrics {missing}")
    model_uri = run.data.tags.get("dlrun.model_uri")
    if not model_uri:
        return problems + ["no dlrun.model_uri tag"]
    return problems + model_problems(client, run.info.run_id, model_uri)


def model_problems(client, run_id: str, model_uri: str) -> list[str]:
    """The tagged model must be a LoggedModel of this run whose artifacts hold its MLmodel file."""
    if not model_uri.startswith("models:/"):
        return [f"dlrun.model_uri {model_uri!r} is not a logged model"]
    try:
        model = client.get_logged_model(model_uri.removeprefix("models:/"))
        files = [a.path for a in client.list_logged_model_artifacts(model.model_id)]
    except Exception as error:  # a missing model is a finding, not a crash of the check
        return [f"model {model_uri}: {type(error).__name__}: {str(error).splitlines()[0]}"]
    problems = []
    if model.source_run_id != run_id:
        problems.append(f"model {model_uri} was logged by run {model.source_run_id}")
    if "MLmodel" not in files:
        problems.append(f"model {model_uri} has no MLmodel file (artifacts: {files[:5]})")
    return problems


# ---------------------------------------------------------------------------------------------
# the report


def markdown(results: dict) -> str:
    environment = results["environment"]
    heading = (f"{results['runs']} runs of `dlrun {' '.join(RUN)} seed=I` in one process "
               f"({results['seconds']:.0f} s, {environment['cores']} cores, dlrun {environment['dlrun']}).")
    lines = ["# dlrun soak test", "", heading, "", "| check | result | figures |", "|---|---|---|"]
    for name, check in results["checks"].items():
        lines.append(f"| {name} | {'ok' if check['ok'] else 'FAILED'} | {check['detail']} |")
    rss = [m["rss_mib"] for m in results["made"]]
    if rss:
        step = max(1, len(rss) // 10)
        points = ", ".join(f"{i + 1}: {rss[i]:.0f}" for i in sorted({*range(0, len(rss), step), len(rss) - 1}))
        lines += ["", f"Resident memory (MiB) after run: {points}."]
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import dlrun

    return {"cores": os.cpu_count(), "python": platform.python_version(), "dlrun": dlrun.__version__,
            "load_average_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="tiny runs to make (default 200)")
    parser.add_argument("--settle", type=int, default=20, help="the run after which memory must stay flat")
    parser.add_argument("--max-growth-mib", type=float, default=50.0,
                        help="resident memory may grow at most this much from run --settle to the last")
    parser.add_argument("--out", default=str(RESULTS), help="where soak.json and soak.md go")
    parser.add_argument("--work", help="the folder the runs are made in (kept); default: a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder (its path is printed)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 1 <= args.settle:
        parser.error("--runs and --settle must be at least 1")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="dlrun-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the work folder's own store
    log = lambda text: print(f"[soak] {text}", flush=True)  # noqa: E731
    log(f"{args.runs} runs in {work}")
    started = time.perf_counter()
    home = Path.cwd()
    os.chdir(work)
    try:
        made = run_all(args.runs, log)
        run_ids = [m["run_id"] for m in made if m["run_id"]]
        checks = {"exits": check_exits(made),
                  "memory": check_memory(made, args.settle, args.max_growth_mib),
                  "store": check_store(f"sqlite:///{work / 'mlflow.db'}", run_ids)}
    finally:
        os.chdir(home)
    results = {"runs": args.runs, "seconds": round(time.perf_counter() - started, 1), "environment": environment(),
               "checks": checks, "ok": all(c["ok"] for c in checks.values()), "made": made, "work": str(work)}
    (out / "soak.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "soak.md").write_text(markdown(results), encoding="utf-8")
    for name, check in checks.items():
        log(f"{name}: {'ok' if check['ok'] else 'FAILED'}: {check['detail']}")
    if args.keep or args.work:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out / 'soak.json'} and {out / 'soak.md'} ({results['seconds']:.0f} s)")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
