"""GPU check: `dlrun train trainer=gpu` against a hand-written loop on the same GPU, in 32-bit and bf16.

    bash bench/gpu.sh                           # a machine with an NVIDIA GPU: under 5 minutes
    bash bench/gpu.sh --dry-run --out /tmp/g    # the same steps on CPU at tiny sizes (tests/test_bench.py)

It writes OUT/gpu.json and OUT/gpu.md (OUT: bench/results) with, for the digits CNN and a synthetic set
of 32x32 colour images (50,000, batch 256) at precision 32-true and bf16-mixed:
- samples per second of bench/loops.py's hand-written loop and of dlrun (`train()` as `dlrun train
  trainer=gpu` calls it), whole epochs (validation, checkpoints, logging included), and their ratio
  (target: dlrun >= 0.9x the hand-written loop);
- the peak GPU memory of each;
- a short digits CNN run on the GPU reproduced (`dlrun reproduce`): its metrics within --atol, and
  whether bit-exact;
- with more than one GPU, a `dlrun train trainer=ddp` run: exactly one run recorded, FINISHED.
No figure is asserted; the dry run only shows that every step works.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRECISIONS = ("32-true", "bf16-mixed")
SIZES = {"full": {"rows": 50_000, "epochs": {"digits": 8, "synthetic": 4}, "reproduce_epochs": 3},
         "dry": {"rows": 300, "epochs": {"digits": 1, "synthetic": 1}, "reproduce_epochs": 1}}
TARGET_RATIO = 0.9


def synthetic_images(path: Path, rows: int, seed: int = 0) -> Path:
    """rows 3x32x32 uint8 images of 10 classes (a class's own pattern plus noise), saved for data=npz."""
    import numpy as np

    generator = np.random.default_rng(seed)
    patterns = generator.uniform(0, 255, size=(10, 3, 32, 32))
    y = generator.integers(0, 10, size=rows)
    noise = generator.normal(0, 60, size=(rows, 3, 32, 32))
    x = np.clip(patterns[y] * 0.5 + 64 + noise, 0, 255).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


def cases(work: Path, size: dict) -> dict[str, list[str]]:
    """Each model's overrides, without precision and epochs."""
    images = synthetic_images(work / "synthetic.npz", size["rows"])
    return {"digits CNN (batch 64)": ["data=digits", "model=cnn"],
            f"synthetic {size['rows']} 32x32 (batch 256)": ["data=npz", f"data.path={images}", "model=cnn",
                                                             "data.batch_size=256"]}


def compare_loops(work: Path, device: str, size: dict) -> list[dict]:
    """bench/loops.py's hand-written and dlrun loops, per model and precision, in one process (imports paid
    once): samples per second, peak memory."""
    runs = [(name, precision, epochs, " ".join([*overrides, f"trainer.precision={precision}",
                                                f"trainer.max_epochs={epochs}"]))
            for (name, overrides), epochs in zip(cases(work, size).items(), size["epochs"].values())
            for precision in PRECISIONS]
    command = [sys.executable, "-m", "bench.loops", "--work", str(work / "loops"), "--device", device,
               "--loops", "handwritten", "dlrun", *[a for *_, config in runs for a in ("--config", config)]]
    rows = []
    for (name, precision, epochs, _), entry in zip(runs, json.loads(_run(command).splitlines()[-1])):
        row = {"model": name, "precision": precision, "epochs": epochs, "train_rows": entry["train_rows"],
               **{loop: _throughput(entry, loop) for loop in ("handwritten", "dlrun")}}
        rows.append({**row, "ratio": row["dlrun"]["samples_per_s"] / row["handwritten"]["samples_per_s"]})
    return rows


def _throughput(entry: dict, loop: str) -> dict:
    """Samples per second over the median whole epoch after the first (the first pays warm-up)."""
    import statistics

    (repeat,) = entry["loops"][loop]
    epochs = repeat["epochs"][1:] or repeat["epochs"]
    epoch_s = statistics.median(e["epoch"] for e in epochs)
    return {"epoch_ms": 1000 * epoch_s, "samples_per_s": entry["train_rows"] / epoch_s,
            "peak_memory_mb": repeat["peak_memory_mb"], "val_acc": repeat["val_acc"]}


def check_reproduce(work: Path, trainer: str, epochs: int, atol: float) -> dict:
    """A digits CNN run on the device, then reproduced, both as `dlrun train` and `dlrun reproduce` run them
    (in this process): the largest metric difference, within atol, and whether bit-exact."""
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate
    from dlrun.lifecycle.reproduce import reproduce
    from dlrun.training.run import train

    store = f"sqlite:///{work / 'mlflow.db'}"
    first = train(validate(compose([f"trainer={trainer}", "data=digits", "model=cnn", f"trainer.max_epochs={epochs}",
                                    f"tracking.uri={store}", f"output_dir={work / 'outputs'}",
                                    "tracking.log_model=false", "trainer.enable_progress_bar=false"])))
    again = reproduce(first.run_id, [], store)
    gaps = [abs(a - b) for _, a, b in again.metrics if a is not None and b is not None]
    return {"run_id": first.run_id, "reproduced_id": again.new_id, "atol": atol, "metrics": len(again.metrics),
            "largest_gap": max(gaps) if gaps else None, "within_atol": again.matches(atol),
            "bit_exact": again.matches(0.0), "drift": [tag for tag, _, _ in again.drift]}


def check_ddp(work: Path, devices: int) -> dict:
    """With more than one GPU, `dlrun train trainer=ddp`: exactly one run recorded, FINISHED."""
    if devices < 2:
        return {"skipped": f"{devices} GPU(s): DDP needs at least 2"}
    store = f"sqlite:///{work / 'ddp.db'}"
    _run([*_dlrun(), "train", "trainer=ddp", "data=digits", "model=cnn", "trainer.max_epochs=2",
          f"tracking.uri={store}", f"output_dir={work / 'ddp-outputs'}", "tracking.log_model=false"], cwd=work)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs(experiment_ids=[client.get_experiment_by_name("dlrun").experiment_id])
    return {"devices": devices, "runs": len(runs), "statuses": [r.info.status for r in runs],
            "recorded_once": len(runs) == 1 and runs[0].info.status == "FINISHED"}


def _dlrun() -> list[str]:
    beside = Path(sys.executable).parent / "dlrun"
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "dlrun"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd or REPO, capture_output=True, text=True, timeout=600, env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def markdown(results: dict) -> str:
    env = results["environment"]
    out = ["# dlrun GPU check", "", f"`{env['command']}`: {env['device_name']}, {env['devices']} device(s), torch "
           f"{env['torch']}; {env['seconds']:.0f} s in all.", ""]
    if env["dry_run"]:
        out += ["**Dry run** on CPU at tiny sizes: it shows that every step works; its figures say nothing of a GPU.", ""]
    if results["errors"]:
        out += ["**Steps that failed:** " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), ""]
    out += ["## Samples per second (whole epochs)", "",
            f"Target: dlrun >= {TARGET_RATIO}x the hand-written loop on the same device.", "",
            "| model | precision | hand-written samples/s | dlrun samples/s | dlrun x | met | peak MiB hand / dlrun |",
            "|---|---|---|---|---|---|---|"]
    for row in results.get("loops", []):
        hand, ours = row["handwritten"], row["dlrun"]
        memory = " / ".join("n/a" if v is None else f"{v:.0f}" for v in (hand["peak_memory_mb"], ours["peak_memory_mb"]))
        out.append(f"| {row['model']} | {row['precision']} | {hand['samples_per_s']:.0f} | {ours['samples_per_s']:.0f} "
                   f"| {row['ratio']:.2f} | {'met' if row['ratio'] >= TARGET_RATIO else '**missed**'} | {memory} |")
    reproduce = results.get("reproduce")
    if reproduce:
        out += ["", "## Reproduce on the device", "",
                f"Run {reproduce['run_id']} reproduced as {reproduce['reproduced_id']}: {reproduce['metrics']} metrics, "
                f"largest difference {reproduce['largest_gap']}; within --atol {reproduce['atol']}: "
                f"{'yes' if reproduce['within_atol'] else 'NO'}; bit-exact: {'yes' if reproduce['bit_exact'] else 'no'}."]
    ddp = results.get("ddp")
    if ddp:
        out += ["", "## DDP", "", ddp.get("skipped") or f"{ddp['devices']} GPUs: {ddp['runs']} run(s) recorded "
                f"({', '.join(ddp['statuses'])}); recorded once: {'yes' if ddp['recorded_once'] else 'NO'}."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where gpu.{json,md} go")
    parser.add_argument("--atol", type=float, default=1e-4, help="reproduce's --atol")
    args = parser.parse_args(argv)
    import torch

    devices = torch.cuda.device_count()
    if not devices and not args.dry_run:
        print("bench/gpu.sh: no CUDA GPU here (torch.cuda.device_count() is 0). Run it on a machine with an "
              "NVIDIA GPU, or pass --dry-run to try the steps on CPU.", file=sys.stderr)
        return 2
    device, trainer = ("cpu", "cpu") if args.dry_run else ("cuda", "gpu")
    size = SIZES["dry" if args.dry_run else "full"]
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dlrun-gpu-"))
    started, results, errors = time.perf_counter(), {}, {}
    steps = {"loops": lambda: compare_loops(work, device, size),
             "reproduce": lambda: check_reproduce(work, trainer, size["reproduce_epochs"], args.atol),
             "ddp": lambda: check_ddp(work, 0 if args.dry_run else devices)}
    try:
        for name, step in steps.items():
            try:
                results[name] = step()
            except Exception as error:  # one failed step must not lose the others' figures
                errors[name] = f"{type(error).__name__}: {error}"
            print(f"{name}: {time.perf_counter() - started:.0f} s {errors.get(name, '')}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["errors"] = errors
    results["environment"] = {"command": " ".join(["bash bench/gpu.sh", *(argv if argv is not None else sys.argv[1:])]),
                              "dry_run": args.dry_run, "devices": devices, "torch": torch.__version__,
                              "device_name": torch.cuda.get_device_name(0) if devices and not args.dry_run else "CPU",
                              "seconds": time.perf_counter() - started}
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "gpu.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
