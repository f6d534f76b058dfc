"""bench/speed.py at its quick size: one command that runs every section and writes its tables.

No timing is asserted here (issue #6: the benchmark is its own command); only that it works,
that speed.json holds every section and speed.md a row per target, and that it leaves nothing
behind but its --out folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SECTIONS = ["environment", "store", "loops", "profile", "startup", "fixed", "sweeps", "pruning", "scaling", "gpu",
            "targets", "errors"]
TARGETS = ["1.10x the hand-written loop, both models (training batches)",
           "1.10x the hand-written loop, both models (whole epoch",
           "`dlrun --help` under 0.3 s", "`dlrun configs` under 0.3 s", "`dlrun train --cfg` under 1.0 s",
           "fixed cost of `dlrun train`", "MLflow logging <= 5% of training time (per-epoch metrics",
           "MLflow logging <= 5% of training time (everything", "linear in data size",
           "spends >= 40% less training time", "within 0.5 points"]


def written_by_a_run() -> set[Path]:
    """What a stray run could leave in the checkout: anything in bench/ (bytecode, results), and dlrun's
    or MLflow's outputs at the top. (Not the whole checkout: other work may change it meanwhile.)"""
    found = {p for p in (REPO / "bench").rglob("*")}
    found.update(REPO / name for name in ("mlflow.db", "mlruns", "outputs", "optuna", "sweeps/optuna")
                 if (REPO / name).exists())
    return found


def test_quick_benchmark_runs_every_section_and_writes_its_tables(tmp_path):
    out = tmp_path / "results"
    before = written_by_a_run()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "speed.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert written_by_a_run() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert sorted(p.name for p in out.iterdir()) == ["speed.json", "speed.md"]

    results = json.loads((out / "speed.json").read_text())
    assert set(SECTIONS) <= set(results)
    assert results["errors"] == {}
    for model in ("cnn", "mlp"):
        entry = results["loops"][model]
        assert set(entry["loops"]) == {"handwritten", "lightning", "dlrun"}
        for loop in entry["loops"].values():
            assert loop["train_ms"] > 0 and loop["epoch_ms"] > 0 and loop["peak_rss_mib"] > 0
        assert set(entry["ratios"]) == {"dlrun/handwritten", "lightning/handwritten"}
        assert entry["loops"]["dlrun"]["fit_seconds"] > 0
    assert results["profile"]["mlp"]["attribution_ms"]
    startup = {"dlrun --help", "dlrun configs", "dlrun train --cfg", "import pytorch_lightning, mlflow"}
    assert startup <= set(results["startup"])
    assert results["fixed"]["best"]["fixed_s"] > 0
    assert set(results["sweeps"]["runs"]) == {"1", "2"}
    assert set(results["pruning"]["studies"]) == {"pruned", "unpruned"}
    assert results["scaling"]["rows"] and results["scaling"]["widths"]
    assert "available" in results["gpu"]

    targets = results["targets"]
    assert len(targets) == len(TARGETS)
    for fragment in TARGETS:
        assert sum(fragment in t["target"] for t in targets) == 1, fragment
    for t in targets:
        assert t["met"] in (True, False), t  # every target measured (met or missed), none left out

    markdown = (out / "speed.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    for t in targets:
        assert sum(line.startswith(f"| {t['target']} |") for line in rows) == 1, t["target"]
    assert "## Per-epoch time" in markdown and "## GPU" in markdown
