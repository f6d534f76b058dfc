"""The closing summary of a training run; `run_id: ...` is always the last line."""

from __future__ import annotations

import typer

from dlrun.database import hide_passwords


def print_summary(result) -> None:
    choices = " ".join(f"{g}={o}" for g, o in sorted(result.choices.items()))
    lines = [
        "",
        f"dlrun: finished {result.epochs} epoch{'s' if result.epochs != 1 else ''}" + (f" of {choices}" if choices else ""),
    ]
    if result.history:
        last = result.history[-1]
        lines.append("  last epoch: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(last.items()) if k != "lr"))
    lines.append("  test (best checkpoint by val/loss): " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(result.test_metrics.items())))
    if getattr(result, "world_size", 1) > 1:
        lines.append(f"  processes: {result.world_size} (DDP); data.batch_size is per process: "
                     f"{result.batch_size} each, {result.batch_size * result.world_size} per optimizer step")
    lines.append(f"  checkpoints: {result.checkpoint_dir}")
    lines.append(f"  mlflow: {hide_passwords(result.tracking_uri)}  run {result.run_name}")
    if result.model_uri:
        lines.append(f"  model: {result.model_uri}")
    if getattr(result, "record_note", None):
        lines.append(f"  warning: {result.record_note}")
    lines.append(f"run_id: {result.run_id}")
    typer.echo("\n".join(lines))
