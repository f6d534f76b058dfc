"""What a sweep shows and leaves behind: progress lines, the final table, trials.csv, plots."""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass, field

from dlrun.tuning.states import TrialState


@dataclass
class TrialRow:
    """One trial as reported: its number, outcome and the overrides that made it."""

    number: int
    state: TrialState
    value: float | None
    overrides: list[str]  # the trial's own overrides, not the base run's
    run_id: str | None = None
    epochs: int = 0
    fit_seconds: float = 0.0
    message: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)


def best_row(rows: list[TrialRow], direction: str) -> TrialRow | None:
    """The best complete trial (pruned ones stopped early and do not compete)."""
    complete = [r for r in rows if r.state == TrialState.COMPLETE and r.value is not None]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda r: r.value)


def progress_line(row: TrialRow, done: int, total: int, rows: list[TrialRow], metric: str, direction: str) -> str:
    """`[3/8] trial 2  complete  val/acc=0.95  best=0.96 (trial 1)  optim=adam  [12.3s, 5 epochs]`: 3 of 8 done."""
    value = f"{metric}={row.value:.4g}" if row.value is not None else (row.message.splitlines() or ["-"])[0][:160]
    best = best_row(rows, direction)
    best_text = f"best={best.value:.4g} (trial {best.number})" if best else "best=-"
    return (f"[{done}/{total}] trial {row.number}  {row.state:<8}  {value}  {best_text}  "
            f"{' '.join(row.overrides)}  [{row.fit_seconds:.1f}s, {row.epochs} epoch{'' if row.epochs == 1 else 's'}]")


def final_table(rows: list[TrialRow], metric: str, direction: str) -> str:
    """All trials, best first; failed trials last with their reason."""
    def order(row: TrialRow):
        if row.value is None:
            return (2, 0.0, row.number)
        rank = -row.value if direction == "maximize" else row.value
        return (0 if row.state == TrialState.COMPLETE else 1, rank, row.number)

    table = [["trial", "state", metric, "epochs", "run_id", "overrides"]]
    for row in sorted(rows, key=order):
        value = f"{row.value:.6g}" if row.value is not None else "-"
        detail = " ".join(row.overrides) + (f"  ({row.message.splitlines()[0][:120]})" if row.message else "")
        table.append([str(row.number), row.state, value, str(row.epochs), row.run_id or "-", detail])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in table)


def rerun_command(base_overrides: list[str], row: TrialRow, config_dir: str | None) -> str:
    """The exact `dlrun train ...` that trains the trial's config again."""
    words = ["dlrun", "train", *(["--config-dir", config_dir] if config_dir else []), *base_overrides, *row.overrides]
    return " ".join(shlex.quote(w) for w in words)


def trials_csv(rows: list[TrialRow], metric: str) -> str:
    keys = sorted({o.split("=", 1)[0] for r in rows for o in r.overrides})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", metric, *keys, "epochs", "fit_seconds", "run_id", "message"])
    for row in sorted(rows, key=lambda r: r.number):
        values = dict(o.split("=", 1) for o in row.overrides)
        writer.writerow([row.number, row.state, "" if row.value is None else row.value,
                         *(values.get(k, "") for k in keys), row.epochs, f"{row.fit_seconds:.3f}",
                         row.run_id or "", row.message.splitlines()[0] if row.message else ""])
    return out.getvalue()


def history_figure(rows: list[TrialRow], metric: str, direction: str):
    """The optimization history: each trial's value and the best so far."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        picked = [r for r in rows if r.state == state and r.value is not None]
        axes.scatter([r.number for r in picked], [r.value for r in picked], marker=marker, label=state)
    best, steps, values = None, [], []
    for row in sorted(rows, key=lambda r: r.number):
        if row.state == TrialState.COMPLETE and row.value is not None:
            if best is None or (row.value > best if direction == "maximize" else row.value < best):
                best = row.value
        if best is not None:
            steps.append(row.number)
            values.append(best)
    axes.step(steps, values, where="post", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title("optimization history")
    axes.legend()
    figure.tight_layout()
    return figure


def importance_figure(importances: dict[str, float]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, max(2.5, 1.0 + 0.4 * len(importances))), dpi=100)
    axes = figure.subplots()
    names = list(importances)[::-1]
    axes.barh(names, [importances[n] for n in names])
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("parameter importances")
    figure.tight_layout()
    return figure
