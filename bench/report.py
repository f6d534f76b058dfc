"""The speed benchmark's targets (issue #6), its printed tables and its markdown (speed.md)."""

from __future__ import annotations

MODEL_NAMES = {"cnn": "digits CNN", "mlp": "wine MLP"}
LOOP_NAMES = {"handwritten": "1 hand-written", "lightning": "2 vanilla Lightning", "dlrun": "3 dlrun train"}


def _f(value, spec: str = ".2f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def _pct(share) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _biggest(seconds: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(seconds.items(), key=lambda kv: -kv[1])


def get_path(results: dict, *keys):
    """results[k1][k2]..., or None where a key is missing."""
    for key in keys:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results


# ---------------------------------------------------------------------------------------------
# targets


def targets(results: dict) -> list[dict]:
    """Every target of issue #6 with the measured figure and met (True), missed (False) or not measured (None)."""
    rows = []

    def add(target: str, figure: str, met, note: str = "") -> None:
        rows.append({"target": target, "figure": figure, "met": met, "note": note})

    loops = results.get("loops") or {}
    for kind, label in (("train", "training batches"), ("epoch", "whole epoch: + validation, checkpoints, logging")):
        ratios = {m: get_path(loops, m, "ratios", "dlrun/handwritten", kind) for m in ("cnn", "mlp")}
        figure = ", ".join(f"{MODEL_NAMES[m]} {_f(r)}x" for m, r in ratios.items())
        met = None if None in ratios.values() else all(r <= 1.10 for r in ratios.values())
        add(f"dlrun per-epoch time <= 1.10x the hand-written loop, both models ({label})", figure, met)

    startup = results.get("startup") or {}
    for name, limit in (("dlrun --help", 0.3), ("dlrun configs", 0.3), ("dlrun train --cfg", 1.0)):
        value = get_path(startup, name, "median_s")
        add(f"`{name}` under {limit} s", f"{_f(value)} s", None if value is None else value < limit)

    fixed = results.get("fixed") or {}
    cost, imports = get_path(fixed, "best", "fixed_s"), fixed.get("import_pl_mlflow_s")
    add("fixed cost of `dlrun train` <= 2 s over `import pytorch_lightning, mlflow`",
        f"{_f(cost)} s (start to first batch {_f(get_path(fixed, 'best', 'start_to_first_batch_s'))} s + last batch to "
        f"exit {_f(get_path(fixed, 'best', 'last_batch_to_exit_s'))} s); imports {_f(imports)} s; over: "
        f"{_f(None if None in (cost, imports) else cost - imports)} s",
        None if None in (cost, imports) else cost - imports <= 2.0,
        "existing MLflow store; a first run in an empty folder adds the store's creation "
        f"({_f(get_path(results, 'store', 'create_seconds'))} s)")

    for scope, label in (("during_fit", "per-epoch metrics, during fit"), ("whole_run", "everything the run logs")):
        shares = {m: mlflow_share(loops.get(m), scope) for m in ("cnn", "mlp")}
        figure = ", ".join(f"{MODEL_NAMES[m]} {_f(None if s is None else 100 * s, '.1f')}%" for m, s in shares.items())
        met = None if None in shares.values() else all(s <= 0.05 for s in shares.values())
        add(f"MLflow logging <= 5% of training time ({label}; training time = fit time)", figure, met)

    lin = get_path(results, "scaling", "linearity", "dlrun")
    if lin:
        per_row = ", ".join(f"{int(n):,} rows {_f(v, '.2f')} us/row" for n, v in lin["us_per_row"].items())
        ratio = lin["largest_vs_next"]
        add("per-epoch time linear in data size (dlrun; per-row time of the two largest sizes within 0.8-1.25x)",
            f"{per_row}; ratio {_f(ratio)}", None if ratio is None else 0.8 <= ratio <= 1.25)
    else:
        add("per-epoch time linear in data size", "not measured", None)

    pruning = results.get("pruning") or {}
    saving, gap = pruning.get("fit_saving"), pruning.get("best_gap_points")
    studies = pruning.get("studies") or {}
    add(f"a pruned study of {pruning.get('trials', 20)} trials spends >= 40% less training time than unpruned",
        f"{_pct(saving)} less (fit {_f(get_path(studies, 'pruned', 'fit_seconds'), '.1f')} s vs "
        f"{_f(get_path(studies, 'unpruned', 'fit_seconds'), '.1f')} s; epochs {_pct(pruning.get('epoch_saving'))} fewer)",
        None if saving is None else saving >= 0.40)
    add("its best value within 0.5 points of the unpruned study's",
        f"val/acc {_f(get_path(studies, 'pruned', 'best_value'), '.4f')} vs "
        f"{_f(get_path(studies, 'unpruned', 'best_value'), '.4f')}: "
        f"{_f(gap, '.2f')} points", None if gap is None else (gap <= 0.5 or pruning.get("pruned_better_or_equal")))
    return rows


def mlflow_share(model: dict | None, scope: str) -> float | None:
    """MLflow time over fit time for a model's dlrun loop: the per-epoch log_batch calls during fit,
    or every RunRecord call of the run (store opening, run creation, params, artifacts, checkpoints, model)."""
    dl = get_path(model, "loops", "dlrun") if model else None
    if not dl or not dl.get("fit_seconds"):
        return None
    if scope == "during_fit":
        return dl["mlflow_fit_seconds"] / dl["fit_seconds"]
    return dl["mlflow_seconds"] / dl["fit_seconds"]


def targets_text(rows: list[dict]) -> str:
    lines = ["== targets"]
    for row in rows:
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[row["met"]]
        lines.append(f"  {verdict} {row['target']}: {row['figure']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# printed sections


def loops_text(model: str, entry: dict) -> str:
    loops = entry["loops"]
    first = loops["handwritten"]
    lines = [f"{MODEL_NAMES[model]} ({' '.join(entry['overrides'])}): {entry['epochs']} epochs, batch "
             f"{first['batch_size']}, {first['train_rows']} training rows, {first['threads']} threads; "
             "median over epochs after the first, least of the repeats",
             f"  {'loop':22} {'train ms':>9} {'rest ms':>9} {'epoch ms':>9} {'train x':>8} {'epoch x':>8} "
             f"{'peak MiB':>9} {'at fit MiB':>10}  final val/acc"]
    for loop in ("handwritten", "lightning", "dlrun"):
        s = loops[loop]
        lines.append(f"  {LOOP_NAMES[loop]:22} {s['train_ms']:9.1f} {s['rest_ms']:9.1f} {s['epoch_ms']:9.1f} "
                     f"{s['train_ms'] / first['train_ms']:8.2f} {s['epoch_ms'] / first['epoch_ms']:8.2f} "
                     f"{s['peak_rss_mib']:9.0f} {_f(s['rss_at_fit_start_mib'], '10.0f')}  "
                     f"{_f(s['final'].get('val/acc'), '.3f')}")
    dl = loops["dlrun"]
    lines.append(f"  dlrun: fit {dl['fit_seconds']:.2f} s; MLflow {dl['mlflow_fit_seconds']:.3f} s during fit "
                 f"({100 * mlflow_share(entry, 'during_fit'):.1f}%), {dl['mlflow_seconds']:.2f} s in the whole run "
                 f"({100 * mlflow_share(entry, 'whole_run'):.0f}%; biggest: "
                 + ", ".join(f"{k} {v:.2f} s" for k, v in _biggest(dl["tracking"])[:3]) + ")")
    return "\n".join(lines)


def attribution_rows(entry: dict) -> list[tuple[str, float, float]]:
    """(label, ms per epoch, share of the epoch), biggest first within each level, plus Lightning's rest."""
    ms = entry["attribution_ms"]
    epoch = entry["epoch_ms"]
    top = {k: v for k, v in ms.items() if not k.startswith("  ")}
    nested = {k: v for k, v in ms.items() if k.startswith("  ")}
    # optimizer.step runs the closure (training_step, backward): report its own part apart
    step_key = next((k for k in top if k.startswith("optimizer.step")), None)
    rows = []
    if step_key:
        inner = top.get("training_step (forward, loss, check, log)", 0) + top.get("backward", 0)
        top["optimizer.step outside the closure (Adam update, zero_grad, Lightning's glue)"] = top.pop(step_key) - inner
    rest = epoch - sum(top.values())
    for k, v in sorted(top.items(), key=lambda kv: -kv[1]):
        rows.append((k, v, v / epoch))
    rows.append(("rest: Lightning's loops, hooks dispatch, progress tracking", rest, rest / epoch))
    for k, v in sorted(nested.items(), key=lambda kv: -kv[1]):
        rows.append((k, v, v / epoch))
    return rows


def profile_text(model: str, entry: dict, loops: dict | None) -> str:
    lines = [f"{MODEL_NAMES[model]}: where dlrun's epoch goes ({entry['epoch_ms']:.1f} ms an epoch with the timers on, "
             f"mean of {entry['attributed_epochs']} epochs; indented lines are part of a line above)"]
    for label, value, share in attribution_rows(entry):
        lines.append(f"  {value:8.2f} ms {100 * share:5.1f}%  {label}")
    if loops:
        hand = loops["loops"]["handwritten"]
        lines.append(f"  hand-written loop: {hand['train_ms']:.1f} ms training, {hand['epoch_ms']:.1f} ms whole epoch")
    if entry["variants"]:
        lines.append("  dlrun as is and with one change (least of the rounds; x: against the hand-written loop, "
                     "and against 'as is' in the same process)")
    for name, v in entry["variants"].items():
        lines.append(f"    train {v['train_ms']:7.1f} ms {_f(v.get('train_ratio'), '5.2f')}x "
                     f"({v['train_vs_as_is']:5.2f}), epoch {v['epoch_ms']:7.1f} ms "
                     f"{_f(v.get('epoch_ratio'), '5.2f')}x ({v['epoch_vs_as_is']:5.2f})  {name}")
    return "\n".join(lines)


def startup_text(out: dict) -> str:
    lines = [f"start-up (median wall time of a whole process; dlrun is {out['command']})"]
    for name, v in out.items():
        if isinstance(v, dict):
            lines.append(f"  {v['median_s']:6.2f} s  {name}")
    return "\n".join(lines)


def fixed_text(out: dict) -> str:
    best = out["best"]
    lines = [f"fixed cost of `{out['command']}` (existing store; the least of {len(out['runs'])} runs): "
             f"{best['fixed_s']:.2f} s = start to first batch {best['start_to_first_batch_s']:.2f} s + last batch to "
             f"exit {best['last_batch_to_exit_s']:.2f} s; `import pytorch_lightning, mlflow` "
             f"{out['import_pl_mlflow_s']:.2f} s"]
    for name, value in best["steps_s"].items():
        lines.append(f"  {value:6.2f} s  {name}")
    return "\n".join(lines)


def sweeps_text(out: dict) -> str:
    runs = out["runs"]
    lines = [f"sweep of {out['trials']} trials (iris MLP, {out['epochs']} epochs each, whole dlrun train runs):"]
    for jobs, v in runs.items():
        lines.append(f"  --n-jobs {jobs}: {v['wall_s']:.1f} s, {v['trials_per_minute']:.1f} trials per minute")
    return "\n".join(lines)


def pruning_text(out: dict) -> str:
    lines = [f"study of {out['trials']} trials (digits MLP, {out['epochs']} epochs, TPE seed 0), "
             "median pruner or none:"]
    for name, s in out["studies"].items():
        lines.append(f"  {name:9} fit {s['fit_seconds']:7.1f} s, {s['epochs']:4d} epochs, wall {s['wall_s']:.0f} s, "
                     f"best val/acc {_f(s['best_value'], '.4f')}, states {s['states']}")
    lines.append(f"  pruning saves {_pct(out['fit_saving'])} of the training time ({_pct(out.get('epoch_saving'))} of "
                 f"the epochs); best values {_f(out['best_gap_points'])} points apart")
    return "\n".join(lines)


def scaling_text(out: dict) -> str:
    lines = [f"scaling (blobs, MLP, batch {out['batch_size']}, {out['epochs']} epochs; training ms an epoch)"]
    lines.append(f"  {'rows':>10} {'hand ms':>9} {'dlrun ms':>9} {'ratio':>6} {'hand us/row':>11} {'dlrun us/row':>12}")
    for n, e in out["rows"].items():
        h, d = e["handwritten"], e["dlrun"]
        lines.append(f"  {int(n):10,} {h['train_ms']:9.1f} {d['train_ms']:9.1f} {d['train_ms'] / h['train_ms']:6.2f} "
                     f"{1000 * h['train_ms'] / h['train_rows']:11.2f} {1000 * d['train_ms'] / d['train_rows']:12.2f}")
    lines.append(f"  {'width':>10} {'hand ms':>9} {'dlrun ms':>9} {'ratio':>6}   ({out['width_rows']:,} rows)")
    for w, e in out["widths"].items():
        h, d = e["handwritten"], e["dlrun"]
        lines.append(f"  {int(w):10} {h['train_ms']:9.1f} {d['train_ms']:9.1f} {d['train_ms'] / h['train_ms']:6.2f}")
    return "\n".join(lines)


def gpu_text(out: dict) -> str:
    if not out.get("available"):
        return "GPU: no GPU"
    lines = ["GPU: training samples per second"]
    for model, e in out["models"].items():
        parts = []
        for loop in ("handwritten", "dlrun"):
            v = e.get(loop, {})
            parts.append(f"{loop} {_f(v.get('samples_per_s'), ',.0f')}" if "samples_per_s" in v else f"{loop} failed")
        lines.append(f"  {MODEL_NAMES[model]}: {', '.join(parts)}; hand-written / dlrun {_f(e.get('ratio'))}x")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# markdown


def markdown(results: dict) -> str:
    env = results.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())
    out = ["# dlrun speed benchmark", "",
           f"`{env.get('command', 'python bench/speed.py')}`: {env.get('cores')} cores, {env.get('threads')} torch "
           f"threads, Python {env.get('python')}, {versions}. Load average at start "
           f"{_f((env.get('load_average_start') or [None])[0], '.1f')}, "
           f"at end {_f((env.get('load_average_end') or [None])[0], '.1f')}; "
           f"{_f(env.get('seconds'), '.0f')} s in all.", ""]
    if env.get("quick"):
        out += ["**Quick run** (tiny sizes): it shows that the benchmark works; its figures say little.", ""]
    if results.get("errors"):
        out += ["**Sections that failed:** " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), ""]
    out += ["## Targets (issue #6)", "", "| target | measured | met |", "|---|---|---|"]
    for row in results.get("targets", []):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[row["met"]]
        note = f" ({row['note']})" if row.get("note") else ""
        out.append(f"| {row['target']} | {row['figure']}{note} | {verdict} |")
    out.append("")

    loops = results.get("loops") or {}
    if loops:
        out += ["## Per-epoch time", "",
                "Median of the epochs after the first (warm-up), the least of the repeats. *train*: the training "
                "batches (start of the epoch to the end of its last optimizer step); *epoch*: start of one epoch "
                "to the start of the next (the last: to the end of training); *rest*: epoch - train (validation, "
                "metric logging, checkpoints, the loop's own work between epochs).", "",
                "| model | loop | train ms | rest ms | epoch ms | train x | epoch x | peak RSS MiB "
                "| RSS at fit start MiB | final val/acc |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for model, entry in loops.items():
            first = entry["loops"]["handwritten"]
            for loop in ("handwritten", "lightning", "dlrun"):
                s = entry["loops"][loop]
                out.append(f"| {MODEL_NAMES[model]} ({entry['epochs']} epochs, batch {s['batch_size']}) | "
                           f"{LOOP_NAMES[loop]} | "
                           f"{s['train_ms']:.1f} | {s['rest_ms']:.1f} | {s['epoch_ms']:.1f} | "
                           f"{s['train_ms'] / first['train_ms']:.2f} | {s['epoch_ms'] / first['epoch_ms']:.2f} | "
                           f"{s['peak_rss_mib']:.0f} | {_f(s['rss_at_fit_start_mib'], '.0f')} | "
                           f"{_f(s['final'].get('val/acc'), '.3f')} |")
        out += ["", "Peak RSS is per process and includes the imports: the hand-written and vanilla loops build the "
                "model with dlrun's own code (so Lightning is imported there too); dlrun adds MLflow.", ""]
        out += ["### MLflow logging", "",
                "Time in dlrun's `RunRecord` calls (wrapped with timers in the benchmark process; a call made from "
                "another call counts once in the totals), against the fit time (`TrainResult.fit_seconds`). "
                "`import mlflow` is done before `train()` and listed apart.", "",
                "| model | fit s | MLflow during fit s | share | MLflow whole run s | share | import mlflow s |",
                "|---|---|---|---|---|---|---|"]
        for model, entry in loops.items():
            dl = entry["loops"]["dlrun"]
            out.append(f"| {MODEL_NAMES[model]} | {dl['fit_seconds']:.2f} | {dl['mlflow_fit_seconds']:.3f} | "
                       f"{100 * mlflow_share(entry, 'during_fit'):.1f}% | {dl['mlflow_seconds']:.2f} | "
                       f"{100 * mlflow_share(entry, 'whole_run'):.0f}% | {_f(dl.get('mlflow_import_seconds'))} |")
        out += ["", "| model | call | s (all calls) |", "|---|---|---|"]
        for model, entry in loops.items():
            for name, seconds in sorted(entry["loops"]["dlrun"]["tracking"].items(), key=lambda kv: -kv[1]):
                out.append(f"| {MODEL_NAMES[model]} | {name} | {seconds:.3f} |")
        out.append("")

    profile = results.get("profile") or {}
    if profile:
        out += ["## Where dlrun's epoch goes", "",
                "A separate run of dlrun's path with timers around its pieces (mean ms an epoch after the warm-up; "
                "indented rows are part of a row above; the timers themselves add a little).", ""]
        for model, entry in profile.items():
            out += [f"**{MODEL_NAMES[model]}**: {entry['epoch_ms']:.1f} ms an epoch", "",
                    "| piece | ms/epoch | share |", "|---|---|---|"]
            for label, value, share in attribution_rows(entry):
                out.append(f"| {label.replace('  ', '&nbsp;&nbsp;&nbsp;')} | {value:.2f} | {100 * share:.1f}% |")
            if entry["variants"]:
                out += ["", "dlrun as is and with one change at a time (trainer overrides, or a what-if patch of "
                        "bench/loops.py applied in the timed process only), in rounds in one process; the least of "
                        "the rounds. *vs as is*: against the unchanged path measured in the same process.", "",
                        "| dlrun with | train ms | x hand-written | vs as is | epoch ms | x hand-written | vs as is |",
                        "|---|---|---|---|---|---|---|"]
                for name, v in entry["variants"].items():
                    out.append(f"| {name} | {v['train_ms']:.1f} | {_f(v.get('train_ratio'))} | "
                               f"{v['train_vs_as_is']:.2f} | "
                               f"{v['epoch_ms']:.1f} | {_f(v.get('epoch_ratio'))} | {v['epoch_vs_as_is']:.2f} |")
            out.append("")

    startup = results.get("startup") or {}
    if startup:
        out += ["## Start-up", "", f"Median wall time of the whole process (`{startup.get('command')}`).", "",
                "| command | s |", "|---|---|"]
        out += [f"| `{k}` | {v['median_s']:.2f} |" for k, v in startup.items() if isinstance(v, dict)]
        out.append("")

    fixed = results.get("fixed") or {}
    if fixed:
        best = fixed["best"]
        out += ["## Fixed cost of `dlrun train`", "",
                f"`{fixed['command']}` in a folder whose MLflow store exists (creating one costs "
                f"{_f(fixed.get('store_create_s'))} s more, once). Marks written by a callback added to `train()` "
                "in the child process; process start and exit are the parent's clock.", "", "| step | s |", "|---|---|"]
        out += [f"| {k} | {v:.2f} |" for k, v in best["steps_s"].items()]
        out += [f"| **start to first batch + last batch to exit** | **{best['fixed_s']:.2f}** |",
                f"| `python -c 'import pytorch_lightning, mlflow'` | {fixed['import_pl_mlflow_s']:.2f} |", ""]

    sweeps = results.get("sweeps") or {}
    if sweeps:
        out += ["## Sweep throughput", "", f"{sweeps['trials']} trials, iris MLP, {sweeps['epochs']} epochs each.", "",
                "| n_jobs | wall s | trials per minute |", "|---|---|---|"]
        out += [f"| {j} | {v['wall_s']:.1f} | {v['trials_per_minute']:.1f} |" for j, v in sweeps["runs"].items()]
        out.append("")

    pruning = results.get("pruning") or {}
    if pruning:
        out += ["## Pruned against unpruned", "",
                f"{pruning['trials']} trials, digits MLP, {pruning['epochs']} epochs, TPE seed 0; training time is "
                "the sum of the trials' `fit_seconds`.", "",
                "| study | fit s | epochs | wall s | best val/acc | trial states |",
                "|---|---|---|---|---|---|"]
        out += [f"| {n} | {s['fit_seconds']:.1f} | {s['epochs']} | {s['wall_s']:.0f} | {_f(s['best_value'], '.4f')} | "
                f"{s['states']} |" for n, s in pruning["studies"].items()]
        out.append("")

    scaling = results.get("scaling") or {}
    if scaling:
        out += ["## Scaling", "", f"Blobs, MLP, batch {scaling['batch_size']}, {scaling['epochs']} epochs; "
                "training time an epoch.", "",
                "| rows | hand-written ms | dlrun ms | x | hand-written us/row | dlrun us/row |",
                "|---|---|---|---|---|---|"]
        for n, e in scaling["rows"].items():
            h, d = e["handwritten"], e["dlrun"]
            out.append(f"| {int(n):,} | {h['train_ms']:.1f} | {d['train_ms']:.1f} | "
                       f"{d['train_ms'] / h['train_ms']:.2f} | "
                       f"{1000 * h['train_ms'] / h['train_rows']:.2f} | {1000 * d['train_ms'] / d['train_rows']:.2f} |")
        out += ["", f"| model.width ({scaling['width_rows']:,} rows) | hand-written ms | dlrun ms | x |",
                "|---|---|---|---|"]
        for w, e in scaling["widths"].items():
            h, d = e["handwritten"], e["dlrun"]
            out.append(f"| {w} | {h['train_ms']:.1f} | {d['train_ms']:.1f} | {d['train_ms'] / h['train_ms']:.2f} |")
        out.append("")

    gpu = results.get("gpu") or {}
    out += ["## GPU", ""]
    if not gpu.get("available"):
        out += ["no GPU", ""]
    else:
        out += ["| model | hand-written samples/s | dlrun samples/s | hand-written / dlrun |", "|---|---|---|---|"]
        for model, e in gpu["models"].items():
            out.append(f"| {MODEL_NAMES[model]} | {_f(get_path(e, 'handwritten', 'samples_per_s'), ',.0f')} | "
                       f"{_f(get_path(e, 'dlrun', 'samples_per_s'), ',.0f')} | {_f(e.get('ratio'))} |")
        out.append("")
    return "\n".join(out)
