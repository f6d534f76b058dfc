"""`python -m bench.speed --quick`: one run at the tiniest sizes, shared by the tests below.

No time is asserted (the benchmark is its own command; the README quotes its full run): only that
its sections ran, what speed.json and speed.md hold, and that nothing is left behind but --out.
The pruning section and the sweeps' long-trial study are more studies through the same code as the
sweeps section: left out here to keep the test short, the pruning comparison is checked on the
sweep's own figures. The GPU check runs in its dry-run form (the same steps on CPU, tiny sizes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, speed, stream

REPO = Path(__file__).resolve().parent.parent
STRAYS = ("mlflow.db", "mlruns", "outputs", "optuna", "lightning_logs")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    before = sorted((REPO / "bench").rglob("*")), [name for name in STRAYS if (REPO / name).exists()]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run([sys.executable, "-m", "bench.speed", "--quick", "--threads", "1", "--out", str(out),
                           "--only", "loops", "startup", "fixed", "sweeps"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    after = sorted((REPO / "bench").rglob("*")), [name for name in STRAYS if (REPO / name).exists()]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, before, after


def test_it_writes_its_two_files_and_nothing_else(quick):
    out, before, after = quick
    assert sorted(p.name for p in out.iterdir()) == ["speed.json", "speed.md"]
    assert after == before


def test_speed_json_holds_every_section(quick):
    results = json.loads((quick[0] / "speed.json").read_text())
    assert results["errors"] == {}
    for model in ("cnn", "mlp"):
        entry = results["loops"][model]
        assert set(entry["loops"]) == {"handwritten", "lightning", "dlrun", "lightning_floor"}
        for loop in entry["loops"].values():
            assert loop["train_ms"] > 0 and loop["epoch_ms"] >= loop["train_ms"] and 0 <= loop["val_acc"] <= 1
        assert set(entry["ratios"]) == {"dlrun/handwritten", "lightning/handwritten", "dlrun/lightning",
                                        "lightning_floor/handwritten"}
    assert {"dlrun --help", "dlrun configs", "dlrun train --cfg", "import pytorch_lightning, mlflow"} <= set(
        results["startup"])
    assert results["fixed"]["wall_s"] > results["fixed"]["epoch_s"] > 0
    sweep = results["sweeps"]["runs"]["1"]
    assert sweep["trials_per_minute"] > 0 and sweep["states"] == {"COMPLETE": results["sweeps"]["trials"]}
    assert sweep["fit_seconds"] > 0 and sweep["epochs"] == results["sweeps"]["epochs"] * results["sweeps"]["trials"]
    peer = results["sweeps"]["peer"]
    assert peer["trials"] == results["sweeps"]["trials"] and 0 <= peer["best_value"] <= 1
    assert results["sweeps"]["dlrun/peer"] == pytest.approx(sweep["trials_per_minute"] / peer["trials_per_minute"])
    not_run = ("pruned", "unpruned", "n_jobs")  # the sections and studies the quick run leaves out
    measured = {t["target"]: t["met"] for t in results["targets"] if not any(w in t["target"] for w in not_run)}
    assert len(measured) == len(results["targets"]) - 3 and set(measured.values()) <= {True, False}


def test_the_pruning_comparison_and_its_targets(quick):
    results = json.loads((quick[0] / "speed.json").read_text())
    sweep = results["sweeps"]["runs"]["1"]
    pruned = {**sweep, "fit_seconds": sweep["fit_seconds"] / 2, "best_value": sweep["best_value"] - 0.004}
    comparison = speed.compare_pruning(pruned, sweep)
    assert comparison["fit_saving"] == pytest.approx(0.5) and comparison["best_gap_points"] == pytest.approx(0.4)
    rows = report.targets({"pruning": {"trials": 1, "studies": {"pruned": pruned, "unpruned": sweep}, **comparison}})
    assert [r["met"] for r in rows if "pruned" in r["target"] or "unpruned" in r["target"]] == [True, True]


def test_speed_md_has_a_row_per_target_and_a_table_per_section(quick):
    results = json.loads((quick[0] / "speed.json").read_text())
    markdown = (quick[0] / "speed.md").read_text()
    for target in results["targets"]:
        assert markdown.count(f"| {target['target']} |") == 1, target["target"]
    for heading in ("Targets", "Per-epoch time", "Start-up", "Fixed cost", "Sweep throughput"):
        assert f"## {heading}" in markdown


@pytest.fixture(scope="module")
def gpu_dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", PYTHON=sys.executable)
    done = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def test_the_gpu_check_runs_every_step_in_its_dry_run(gpu_dry_run):
    results, markdown = gpu_dry_run
    assert results["errors"] == {} and results["environment"]["dry_run"]
    rows = results["loops"]
    assert [(r["model"].split()[0], r["precision"]) for r in rows] == [
        ("digits", "32-true"), ("digits", "bf16-mixed"), ("synthetic", "32-true"), ("synthetic", "bf16-mixed")]
    for row in rows:
        assert row["train_rows"] > 0 and row["dlrun"]["samples_per_s"] > 0 and row["handwritten"]["samples_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["dlrun"]["samples_per_s"] / row["handwritten"]["samples_per_s"])
    reproduce = results["reproduce"]
    assert reproduce["within_atol"] and reproduce["bit_exact"] and reproduce["largest_gap"] == 0  # CPU: deterministic
    assert "skipped" in results["ddp"]
    for heading in ("Samples per second", "Reproduce on the device", "DDP"):
        assert f"## {heading}" in markdown
    assert markdown.count("| digits CNN") == 2 and "**Dry run**" in markdown


def test_the_gpu_check_without_a_gpu_or_dry_run_says_so_and_exits_2(tmp_path):
    done = subprocess.run(["bash", "bench/gpu.sh", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable})
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr and "--dry-run" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def stream_tiny(tmp_path_factory):
    """`python -m bench.stream --tiny` at one size: both loops once (a second size is another dlrun process)."""
    out = tmp_path_factory.mktemp("stream")
    before = sorted((REPO / "bench").rglob("*"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run([sys.executable, "-m", "bench.stream", "--tiny", "--sizes", "40", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, before, sorted((REPO / "bench").rglob("*"))


def test_the_streaming_benchmark_measures_both_loops_on_its_generated_folder(stream_tiny):
    out, before, after = stream_tiny
    assert sorted(p.name for p in out.iterdir()) == ["stream-images", "stream.json", "stream.md"] and after == before
    [folder] = [p for p in (out / "stream-images").iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.iterdir()) == [f"class{k}" for k in range(stream.CLASSES)]
    assert len(list(folder.rglob("*.png"))) == 40 and (out / "stream-images" / ".gitignore").read_text() == "*\n"
    results = json.loads((out / "stream.json").read_text())
    assert results["errors"] == {} and results["sizes"] == [40] and results["environment"]["tiny"]
    for loop in ("dlrun", "hand"):
        figures = results["runs"]["40"][loop]
        assert (figures["train_images"], figures["val_images"]) == (28, 6), loop  # 15% validation, 15% test
        assert figures["images_per_s"] == pytest.approx(figures["train_images"] / figures["train_s"])
        assert figures["epoch_s"] >= figures["train_s"] > 0 and figures["wall_s"] > figures["epoch_s"]
        assert 0 < figures["peak_pss_mib"] <= figures["peak_rss_mib"] and figures["largest_process_mib"] > 0
    assert "data=image_folder data.in_memory=false" in results["runs"]["40"]["dlrun"]["command"]
    assert [t["met"] for t in results["targets"]][0::2] == [None, None]  # one size: nothing to compare
    markdown = (out / "stream.md").read_text()
    assert "| 40 | dlrun train |" in markdown and "| 40 | hand-written DataLoader + PIL |" in markdown
    assert "Load average" in markdown and "**Tiny run**" in markdown


def test_the_streaming_targets_compare_the_smallest_and_largest_sizes():
    def loop(pss: float, images_per_s: float, per_image_ms: float) -> dict:
        return {"peak_pss_mib": pss, "peak_rss_mib": 2 * pss, "largest_process_mib": pss / 2,
                "images_per_s": images_per_s, "per_image_epoch_ms": per_image_ms}

    results = {"sizes": [2000, 50000], "runs": {
        "2000": {"dlrun": loop(1000, 900, 1.0), "hand": loop(600, 1000, 0.9)},
        "50000": {"dlrun": loop(1300, 700, 1.3), "hand": loop(610, 1000, 1.0)}}}
    rows = stream.targets(results)
    assert [r["met"] for r in rows] == [False, False, False]  # +30% memory, 0.7x, 1.3x
    assert "PSS 1000 to 1300 MiB: +30.0%" in rows[0]["figure"] and "RSS summed 2000 to 2600" in rows[0]["figure"]
    assert "50,000: 0.70x (700 against 1000)" in rows[1]["figure"]
    results["runs"]["50000"]["dlrun"] = loop(1200, 850, 1.2)
    assert [r["met"] for r in stream.targets(results)] == [True, True, True]


def test_a_full_run_alternates_each_comparison_and_averages_its_turns(tmp_path):
    bench = speed.Bench(speed.FULL, 1, tmp_path, "cpu")
    calls = []

    def turn(name):
        return lambda index: calls.append(f"{name}{index}") or {"wall_s": 1.0 + 2 * index, "epochs": 30,
                                                                 "states": {"COMPLETE": 3 - index}}

    a, b = bench.alternated(turn("a"), turn("b"))
    assert calls == ["a0", "b0", "b1", "a1"]
    assert a["wall_s"] == b["wall_s"] == 2.0 and a["epochs"] == 30 and a["states"] == {"COMPLETE": 3}
    assert [t["wall_s"] for t in a["turns"]] == [1.0, 3.0]
    quick = speed.Bench(speed.QUICK, 1, tmp_path, "cpu")
    calls.clear()
    quick.alternated(turn("a"), turn("b"))
    assert calls == ["a0", "b0"]
