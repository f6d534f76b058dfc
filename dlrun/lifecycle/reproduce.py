"""`dlrun reproduce`: train a recorded run again from its stored config and compare.

Reports drift in what the run was made with (versions, git state, the digests of its
dataset inputs, or the data fingerprint tag of runs made before those), then trains in a
new run tagged dlrun.reproduced_from (or dlrun.derived_from when overrides change it) and
sets the final metrics side by side (MLflow's system metrics left out).
"""

from __future__ import annotations

from dataclasses import dataclass

from dlrun.lifecycle.stored import load_run
from dlrun.tracking.system_metrics import model_metrics

DRIFT_TAGS = ("dlrun.version", "dlrun.torch_version", "dlrun.lightning_version", "dlrun.python_version",
              "dlrun.git_commit", "dlrun.git_dirty")
FINGERPRINT_TAG = "dlrun.data_fingerprint"  # what runs recorded of their data before they logged dataset inputs


@dataclass
class Reproduction:
    original_id: str
    new_id: str
    drift: list[tuple[str, str, str]]  # (tag, then, now)
    metrics: list[tuple[str, float | None, float | None]]  # (name, original, new)
    derived: bool

    def matches(self, atol: float) -> bool:
        return all(a is not None and b is not None and abs(a - b) <= atol for _, a, b in self.metrics)

    def report(self, atol: float) -> str:
        lines = []
        if self.drift:
            lines.append("drift since the original run:")
            lines += [f"  {tag}: {then} -> {now}" for tag, then, now in self.drift]
        else:
            lines.append("no drift: same versions, git state and data")
        width = max(len(name) for name, _, _ in self.metrics) if self.metrics else 6
        lines.append(f"{'metric':<{width}}  {'original':>12}  {'reproduced':>12}  difference")
        for name, a, b in self.metrics:
            difference = "-" if a is None or b is None else f"{b - a:+.3g}"
            lines.append(f"{name:<{width}}  {_text(a):>12}  {_text(b):>12}  {difference}")
        if not self.derived:
            verdict = "identical" if atol == 0 else f"within {atol}"
            lines.append(f"metrics {verdict}: {'yes' if self.matches(atol) else 'NO'}")
        return "\n".join(lines)


def reproduce(run_id: str, overrides: list[str] | None = None, uri: str | None = None) -> Reproduction:
    """Train the stored run again (with KEY=VALUE overrides, a derived run) and compare."""
    from dlrun.tracking.env import environment_tags
    from dlrun.training.run import train

    stored = load_run(run_id, uri)
    run = stored.run_config(overrides, uri)  # the new run goes to the same store as the original
    derived = bool(overrides)
    tag = "dlrun.derived_from" if derived else "dlrun.reproduced_from"
    result = train(run, extra_tags={tag: run_id})
    now = environment_tags()
    then = stored.run.data.tags
    drift = [(t, then.get(t, "(none)"), now.get(t, "(none)")) for t in DRIFT_TAGS if then.get(t) != now.get(t)]
    drift += _data_drift(stored, result)
    drift += stored.plugin_drift()
    original, new = model_metrics(stored.run.data.metrics), result.final_metrics
    names = sorted(set(original) | set(new))
    return Reproduction(run_id, result.run_id, drift, [(n, original.get(n), new.get(n)) for n in names], derived)


def _data_drift(stored, result) -> list[tuple[str, str, str]]:
    """(what, then, now) for each split whose dataset digest changed; for a run made before dataset inputs
    were logged, its data fingerprint tag against the new run's fingerprint."""
    from dlrun.tracking.datasets import recorded_digests

    then = recorded_digests(stored.run)
    if not then:
        old = stored.run.data.tags.get(FINGERPRINT_TAG, "(none)")
        return [] if old == result.data_fingerprint else [(FINGERPRINT_TAG, old, result.data_fingerprint)]
    now = recorded_digests(stored.client.get_run(result.run_id))
    return [(f"dataset digest ({context})", then.get(context, "(none)"), now.get(context, "(none)"))
            for context in sorted(set(then) | set(now)) if then.get(context) != now.get(context)]


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
