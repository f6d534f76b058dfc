"""`dlrun diff`: the config keys and final metrics that differ between two runs (MLflow's system metrics left out)."""

from __future__ import annotations

from dlrun.lifecycle.stored import load_run
from dlrun.tracking.params import flatten
from dlrun.tracking.system_metrics import model_metrics


def diff_runs(run_a: str, run_b: str, uri: str | None = None) -> str:
    """A table of every config leaf and final metric whose values differ, or a line saying none do."""
    first, second = load_run(run_a, uri), load_run(run_b, uri)
    config_a, config_b = flatten(first.config), flatten(second.config)
    rows = [(key, config_a.get(key, "(absent)"), config_b.get(key, "(absent)"))
            for key in sorted(set(config_a) | set(config_b)) if config_a.get(key) != config_b.get(key)]
    metrics_a, metrics_b = model_metrics(first.run.data.metrics), model_metrics(second.run.data.metrics)
    metric_rows = [(name, _number(metrics_a.get(name)), _number(metrics_b.get(name)))
                   for name in sorted(set(metrics_a) | set(metrics_b)) if metrics_a.get(name) != metrics_b.get(name)]
    if not rows and not metric_rows:
        return f"runs {run_a[:8]} and {run_b[:8]} have the same config and the same final metrics"
    header = ("key", run_a[:8], run_b[:8])
    everything = [header, *rows, *(("metric " + n, a, b) for n, a, b in metric_rows)]
    widths = [max(len(str(r[i])) for r in everything) for i in range(2)]
    return "\n".join(f"{str(k):<{widths[0]}}  {str(a):<{widths[1]}}  {b}" for k, a, b in everything)


def _number(value) -> str:
    return "(absent)" if value is None else f"{value:.6g}"
