"""Streaming benchmark: `dlrun train data=image_folder data.in_memory=false` on 2,000 and 50,000 images.

    nice python -m bench.stream                 # 2,000 and 50,000 images; writes bench/results/stream.{json,md}
    python -m bench.stream --tiny --out /tmp/s  # 40 and 80 images: shows that it works (tests/test_bench.py)
    python -m bench.stream --sizes 2000 10000 --workers 2

Run from the repository root. Synthetic PNG folders (64x64 RGB, 4 classes, seeded) are generated once
into OUT/stream-images/ and reused. For each size, side by side (their order alternates), in
processes of their own, with the same workers, model, batch size and torch threads:
- dlrun: `dlrun train data=image_folder data.in_memory=false model=cnn model.width=8 trainer.max_epochs=1`,
  its epoch timed by a plugin callback (bench/stream_clock.py) through `--plugin` and `callbacks=`;
- hand-written: bench/stream_hand.py, a torch DataLoader over the files decoded with PIL.
Peak RSS is the process tree's (the process and its DataLoader workers, summed, sampled every 0.1 s);
beside it the tree's PSS (which splits the pages that forked workers share with their parent) and
the largest single process's ru_maxrss (os.wait4). The files are read once before the
first size, so neither loop pays the disk. No figure is asserted; the targets are judged in stream.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import report
from bench.speed import dlrun_command

REPO = Path(__file__).resolve().parent.parent
FULL_SIZES, TINY_SIZES = (2000, 50000), (40, 80)
TINY_OVERRIDES = ["tracking.log_model=false", "tracking.system_metrics=false"]
CLASSES, SEED = 4, 0
MODEL = ["model=cnn", "model.width=8"]  # the shipped CNN, narrow: on CPU the data path, not the convolutions, is measured
RSS_GROWTH, SPEED_RATIO, FLAT_RATIO = 1.25, 0.8, 1.25
LOOP_NAMES = {"dlrun": "dlrun train", "hand": "hand-written DataLoader + PIL"}
MEMORY = {"peak_pss_mib": "PSS", "peak_rss_mib": "RSS summed", "largest_process_mib": "largest process"}


def image_folder(root: Path, count: int, size: int) -> Path:
    """ROOT/N-SIZEpx: count seeded PNG images in CLASSES class folders, generated once (into a temporary
    folder renamed whole, so an interrupted generation is not reused)."""
    from PIL import Image

    folder = root / f"{count}-{size}px-{CLASSES}classes-seed{SEED}"
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("*\n")  # thousands of generated files, never part of the repository
    temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    rng = np.random.default_rng(SEED)
    rows, cols = np.mgrid[0:size, 0:size] / size
    patterns = [rows, cols, (rows + cols) / 2, np.hypot(rows - 0.5, cols - 0.5)]  # one gradient per class
    for label in range(CLASSES):
        (temporary / f"class{label}").mkdir()
    for i in range(count):
        label = i % CLASSES
        color = rng.uniform(0.3, 1.0, size=3)
        phase = rng.uniform(0, 1)
        base = (np.sin(2 * np.pi * (patterns[label] * 3 + phase)) + 1) / 2
        pixels = base[..., None] * color * 220 + rng.integers(0, 24, size=(size, size, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(temporary / f"class{label}" / f"{i:06d}.png",
                                                                   compress_level=1)
    os.rename(temporary, folder)
    return folder


def read_all(folder: Path) -> int:
    """Every file's bytes read once (into the page cache), so that the first loop measured pays no disk."""
    return sum(len(file.read_bytes()) for file in folder.rglob("*.png"))


def measured(command: list[str], cwd: Path, env: dict, log: Path, timeout: float) -> dict:
    """Run command; its wall time, the peaks of its process tree's summed RSS and PSS, its largest process's."""
    import psutil

    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    tree = psutil.Process(process.pid)
    peak_rss = peak_pss = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > timeout:
            process.kill()
        rss, pss = _tree_memory(tree)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.1)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {process.returncode}:\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": peak_rss / 2**20, "peak_pss_mib": peak_pss / 2**20,
            "largest_process_mib": usage.ru_maxrss / 1024}


def _tree_memory(tree) -> tuple[int, int]:
    """RSS and PSS (shared pages divided among the processes that share them) of a process and its
    descendants, summed: forked DataLoader workers share much of their parent's memory."""
    import psutil

    rss = pss = 0
    try:
        members = [tree, *tree.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            memory = member.memory_full_info()
        except psutil.Error:
            continue  # a worker that ended between the listing and the reading
        rss, pss = rss + memory.rss, pss + getattr(memory, "pss", memory.rss)
    return rss, pss


class Bench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
        self.env.update(OMP_NUM_THREADS=str(args.threads), PYTHONDONTWRITEBYTECODE="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    def dlrun(self, folder: Path, count: int) -> dict:
        clock = self.work / f"clock-{count}.json"
        overrides = ["data=image_folder", f"data.path={folder}", "data.in_memory=false",
                     f"data.num_workers={self.args.workers}", f"data.batch_size={self.args.batch_size}", *MODEL,
                     "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"seed={SEED}",
                     f"tracking.uri=sqlite:///{self.work / 'mlflow.db'}", f"output_dir={self.work / 'outputs'}",
                     f"callbacks=[{{name: stream_clock, path: '{clock}'}}]", *self.args.dlrun_override]
        command = [*dlrun_command(), "train", "--plugin", str(REPO / "bench" / "stream_clock.py"), *overrides]
        figures = measured(command, self.work, self.env, self.work / f"dlrun-{count}.log", self.args.timeout)
        figures["command"] = "dlrun train " + " ".join(o for o in overrides if not o.startswith(("tracking", "output",
                                                                                                "callbacks", "data.path")))
        return {**figures, **_epoch(json.loads(clock.read_text()))}

    def hand(self, folder: Path, count: int) -> dict:
        command = [sys.executable, "-m", "bench.stream_hand", "--folder", str(folder), "--workers",
                   str(self.args.workers), "--batch-size", str(self.args.batch_size), "--threads",
                   str(self.args.threads), "--model", " ".join(MODEL), "--seed", str(SEED)]
        log = self.work / f"hand-{count}.log"
        figures = measured(command, REPO, self.env, log, self.args.timeout)
        return {**figures, **_epoch(json.loads(log.read_text().strip().splitlines()[-1]))}


def _epoch(clock: dict) -> dict:
    epoch = clock["epochs"][0]
    images = epoch["train_images"] + epoch["val_images"]
    return {**epoch, "images_per_s": epoch["train_images"] / epoch["train_s"],
            "per_image_epoch_ms": 1000 * epoch["epoch_s"] / images}


def targets(results: dict) -> list[dict]:
    """Each target with its figure and met (None where not measured)."""
    sizes = results["sizes"]
    runs = results.get("runs", {})
    rows = []

    def add(target: str, figure: str, value, test) -> None:
        rows.append({"target": target, "figure": figure, "met": None if value is None else bool(test(value))})

    small, large = (runs.get(str(n), {}).get("dlrun") for n in (sizes[0], sizes[-1]))
    both = len(sizes) > 1 and small is not None and large is not None  # one size: nothing to compare
    # PSS counts a page that forked workers share with their parent once; RSS summed over the tree counts
    # it in every process, and one process's peak misses its workers: both shown beside it.
    growth = {key: large[key] / small[key] for key in MEMORY} if both else {}
    add(f"peak memory of `dlrun train` (PSS of the process and its workers) grows by at most {RSS_GROWTH - 1:.0%} "
        f"from {sizes[0]:,} to {sizes[-1]:,} images",
        "; ".join(f"{name} {small[key]:.0f} to {large[key]:.0f} MiB: {_pct(growth[key])}" for key, name in
                  MEMORY.items()) if both else "n/a", growth.get("peak_pss_mib"), lambda g: g <= RSS_GROWTH)
    ratios = {n: runs[str(n)]["dlrun"]["images_per_s"] / runs[str(n)]["hand"]["images_per_s"]
              for n in sizes if {"dlrun", "hand"} <= set(runs.get(str(n), {}))}
    add(f"images per second of the training epoch >= {SPEED_RATIO}x the hand-written loop, at every size",
        "; ".join(f"{n:,}: {r:.2f}x ({runs[str(n)]['dlrun']['images_per_s']:.0f} against "
                  f"{runs[str(n)]['hand']['images_per_s']:.0f})" for n, r in ratios.items()) or "n/a",
        min(ratios.values()) if len(ratios) == len(sizes) else None, lambda r: r >= SPEED_RATIO)
    flat = large["per_image_epoch_ms"] / small["per_image_epoch_ms"] if both else None
    add(f"per-image epoch time at {sizes[-1]:,} images within {FLAT_RATIO}x of {sizes[0]:,}",
        f"{small['per_image_epoch_ms']:.3f} to {large['per_image_epoch_ms']:.3f} ms: {flat:.2f}x" if both else "n/a",
        flat, lambda r: r <= FLAT_RATIO)
    return rows


def _pct(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f}%"


def markdown(results: dict) -> str:
    env = results["environment"]
    out = ["# dlrun streaming benchmark", "",
           f"`{env['command']}`: {env['cores']} cores, {env['threads']} torch threads, {env['workers']} DataLoader "
           f"workers, batch {env['batch_size']}, {', '.join(f'{k} {v}' for k, v in env['versions'].items())}. "
           f"Load average {env['load_average_start']:.1f} at the start, {env['load_average_end']:.1f} at the end; "
           f"{env['seconds']:.0f} s in all (image generation {env['generation_s']:.0f} s).", ""]
    if env["tiny"]:
        out += ["**Tiny run**: it shows that the benchmark works; its figures say little.", ""]
    if results["errors"]:
        out += ["**Failed:** " + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in results["errors"].items()), ""]
    out += ["## Targets", "", report.targets_table(results["targets"]), "",
            "## Per size", "",
            f"Synthetic PNG folders ({env['image_size']}x{env['image_size']} RGB, {CLASSES} classes), one epoch each. "
            "*train s*: the epoch's start to its last optimizer step; *images/s*: training images over that; *epoch "
            "s*: to the end of validation (dlrun: and of its checkpoints); *per image*: epoch s over training and "
            "validation images; *peak RSS*: the process and its workers, summed (pages a worker shares with its "
            "parent count twice); *PSS*: the same with shared pages divided among their processes; *largest*: one "
            "process's peak (ru_maxrss). dlrun's wall time also holds its imports, the scan of the folder, the scaling pass, the test "
            "split and the MLflow record.", "",
            "| images | loop | wall s | train images | train s | images/s | epoch s | per image ms | peak RSS MiB "
            "| PSS MiB | largest MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for count, loops in results.get("runs", {}).items():
        for loop, f in loops.items():
            out.append(f"| {int(count):,} | {LOOP_NAMES[loop]} | {f['wall_s']:.1f} | {f['train_images']:,} "
                       f"| {f['train_s']:.2f} | {f['images_per_s']:.0f} | {f['epoch_s']:.2f} "
                       f"| {f['per_image_epoch_ms']:.3f} | {f['peak_rss_mib']:.0f} | {f['peak_pss_mib']:.0f} "
                       f"| {f['largest_process_mib']:.0f} |")
    if results.get("runs"):
        out.append("")
    command = next((loops["dlrun"]["command"] for loops in results.get("runs", {}).values() if "dlrun" in loops), None)
    if command:
        out += [f"dlrun's command: `{command}`.", ""]
    return "\n".join(out)


def environment(args, command: str) -> dict:
    from importlib import metadata

    versions = {p: metadata.version(p) for p in ("torch", "pytorch-lightning", "pillow")}
    return {"command": command, "cores": os.cpu_count(), "threads": args.threads, "workers": args.workers,
            "batch_size": args.batch_size, "image_size": args.image_size, "tiny": args.tiny,
            "python": platform.python_version(), "versions": versions, "load_average_start": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help=f"image counts (default {' '.join(map(str, FULL_SIZES))})")
    parser.add_argument("--tiny", action="store_true", help=f"{' and '.join(map(str, TINY_SIZES))} images, batch 8, "
                        f"dlrun with {' '.join(TINY_OVERRIDES)}")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers, for both loops")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for both loops")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a loop may take")
    parser.add_argument("--dlrun-override", action="append", default=[], help="one more override for dlrun train")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.tiny:  # quicker, not the same measure: batches of 8, dlrun without its served model and system metrics
        args.batch_size = 8 if args.batch_size == 64 else args.batch_size
        args.dlrun_override = [*TINY_OVERRIDES, *args.dlrun_override]
    sizes = sorted(args.sizes or (TINY_SIZES if args.tiny else FULL_SIZES))
    started = time.perf_counter()
    results = {"sizes": sizes, "environment": environment(args, "python -m bench.stream " + " ".join(argv or sys.argv[1:])),
               "runs": {}, "errors": {}}
    folders = {n: image_folder(args.out / "stream-images", n, args.image_size) for n in sizes}
    results["environment"]["generation_s"] = time.perf_counter() - started
    for folder in folders.values():
        read_all(folder)
    work = Path(tempfile.mkdtemp(prefix="dlrun-bench-stream-"))
    try:
        bench = Bench(args, work)
        for turn, count in enumerate(sizes):
            loops = ("hand", "dlrun") if turn % 2 == 0 else ("dlrun", "hand")
            for loop in loops:
                try:
                    results["runs"].setdefault(str(count), {})[loop] = getattr(bench, loop)(folders[count], count)
                except (RuntimeError, OSError, ValueError, KeyError) as error:
                    results["errors"][f"{loop} {count}"] = str(error)
            results["runs"][str(count)] = {k: results["runs"][str(count)][k] for k in LOOP_NAMES
                                           if k in results["runs"][str(count)]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["environment"].update(load_average_end=os.getloadavg()[0], seconds=time.perf_counter() - started)
    results["targets"] = targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream.json").write_text(json.dumps(results, indent=1))
    (args.out / "stream.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
