"""The speed benchmark's targets and its markdown (speed.md), from the results bench/speed.py measured."""

from __future__ import annotations

MODEL_NAMES = {"cnn": "digits CNN", "mlp": "wine MLP"}
LOOP_NAMES = {"handwritten": "hand-written", "lightning": "vanilla Lightning", "dlrun": "dlrun train",
              "lightning_floor": "Lightning's loop alone (dlrun's batches, nothing logged)"}
STARTUP_LIMITS = {"dlrun --help": 0.3, "dlrun configs": 0.3, "dlrun train --cfg": 1.0}


def get_path(results, *keys):
    """results[k1][k2]..., or None where a key is missing."""
    for key in keys:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results


def _f(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def targets(results: dict) -> list[dict]:
    """Each target with its measured figure and met: True, False, or None where not measured."""
    rows = []

    def add(target: str, figure: str, value, test) -> None:
        rows.append({"target": target, "figure": figure, "met": None if value is None else bool(test(value))})

    loops = results.get("loops") or {}
    # The whole epoch: training batches, validation, checkpoints, logging.
    against = {m: get_path(loops, m, "ratios", "dlrun/lightning", "epoch") for m in MODEL_NAMES}
    hand = {m: get_path(loops, m, "ratios", "dlrun/handwritten", "epoch") for m in MODEL_NAMES}
    peer = {m: get_path(loops, m, "ratios", "lightning/handwritten", "epoch") for m in MODEL_NAMES}
    floor = get_path(loops, "cnn", "ratios", "lightning_floor/handwritten", "epoch")
    add("dlrun's whole epoch at or below vanilla Lightning's, both models",
        "; ".join(f"{name} {_f(against[m])}x vanilla Lightning" for m, name in MODEL_NAMES.items()),
        None if None in against.values() else max(against.values()), lambda r: r <= 1.0)
    add("dlrun's whole epoch <= 1.15x the hand-written loop, digits CNN",
        f"{_f(hand['cnn'])}x (vanilla Lightning {_f(peer['cnn'])}x, Lightning's loop alone {_f(floor)}x; "
        f"wine MLP {_f(hand['mlp'])}x, "
        f"Lightning {_f(peer['mlp'])}x)", hand["cnn"], lambda r: r <= 1.15)

    for name, limit in STARTUP_LIMITS.items():
        value = get_path(results, "startup", name, "median_s")
        add(f"`{name}` under {limit} s", f"{_f(value)} s", value, lambda v, limit=limit: v < limit)

    fixed = get_path(results, "fixed", "fixed_s")
    imports = get_path(results, "startup", "import pytorch_lightning, mlflow", "median_s")
    over = None if None in (fixed, imports) else fixed - imports
    add("fixed cost of `dlrun train` <= 2 s over `import pytorch_lightning, mlflow`",
        f"{_f(fixed)} s (wall {_f(get_path(results, 'fixed', 'wall_s'))} s less the epoch) against {_f(imports)} s "
        f"of imports: {_f(over)} s over", over, lambda v: v <= 2.0)

    sweeps = results.get("sweeps") or {}
    ratio = sweeps.get("dlrun/peer")
    add(f"a {sweeps.get('trials', 20)}-trial study of short trials: >= 0.5x the trials per minute of a hand-written "
        "Optuna + PyTorch + MLflow script",
        f"{_f(ratio)}x ({_f(get_path(sweeps, 'runs', '1', 'trials_per_minute'), '.1f')} against "
        f"{_f(get_path(sweeps, 'peer', 'trials_per_minute'), '.1f')} trials a minute)", ratio, lambda r: r >= 0.5)
    speedup = get_path(sweeps, "long", "speedup")
    jobs = (get_path(sweeps, "long", "jobs") or [1, 2])[-1]
    add(f"trials of >= 5 s: n_jobs {jobs} >= 1.5x the throughput of n_jobs 1",
        f"{_f(speedup)}x (trials of {_f(get_path(sweeps, 'long', 'fit_per_trial_s'), '.1f')} s of training)",
        speedup, lambda r: r >= 1.5)

    pruning = results.get("pruning") or {}
    saving, gap = pruning.get("fit_saving"), pruning.get("best_gap_points")
    fit = {n: get_path(pruning, "studies", n, "fit_seconds") for n in ("pruned", "unpruned")}
    best = {n: get_path(pruning, "studies", n, "best_value") for n in ("pruned", "unpruned")}
    add(f"a pruned study of {pruning.get('trials', 20)} trials spends >= 40% less training time than unpruned",
        f"{_f(None if saving is None else 100 * saving, '.0f')}% less (fit {_f(fit['pruned'], '.1f')} s against "
        f"{_f(fit['unpruned'], '.1f')} s)", saving, lambda s: s >= 0.40)
    add("its best value within 0.5 points of the unpruned study's",
        f"val/acc {_f(best['pruned'], '.4f')} against {_f(best['unpruned'], '.4f')}", gap, lambda g: g <= 0.5)
    return rows


def targets_table(rows: list[dict]) -> str:
    verdicts = {True: "met", False: "**missed**", None: "not measured"}
    lines = ["| target | measured | met |", "|---|---|---|"]
    return "\n".join(lines + [f"| {r['target']} | {r['figure']} | {verdicts[r['met']]} |" for r in rows])


def markdown(results: dict) -> str:
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    out = ["# dlrun speed benchmark", "",
           f"`{env['command']}`: {env['cores']} cores, {env['threads']} torch threads, {env['device']}, "
           f"Python {env['python']}, {versions}. Load average {env['load_average_start']:.1f} at the start, "
           f"{env['load_average_end']:.1f} at the end; {env['seconds']:.0f} s in all.", ""]
    if env["quick"]:
        out += ["**Quick run** (tiny sizes): it shows that the benchmark works; its figures say little.", ""]
    if results["errors"]:
        out += ["**Sections that failed:** " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), ""]
    out += ["## Targets", "", targets_table(results["targets"]), ""]

    if results.get("loops"):
        out += ["## Per-epoch time", "",
                "The loops take turns in one process, on the same data, initial weights and optimizer (bench/loops.py). "
                "Median of the epochs after the first, the least of the repeats. *train*: the epoch's start to its "
                "last optimizer step; *epoch*: to the next epoch's start (validation, logging, checkpoints "
                "included); x: against the hand-written loop.", "",
                "| model | loop | train ms | epoch ms | train x | epoch x | final val/acc |", "|---|---|---|---|---|---|---|"]
        for model, entry in results["loops"].items():
            hand = entry["loops"]["handwritten"]
            for loop, s in entry["loops"].items():
                out.append(f"| {MODEL_NAMES[model]} ({entry['epochs']} epochs, batch {entry['batch_size']}) "
                           f"| {LOOP_NAMES[loop]} | {s['train_ms']:.1f} | {s['epoch_ms']:.1f} "
                           f"| {s['train_ms'] / hand['train_ms']:.2f} | {s['epoch_ms'] / hand['epoch_ms']:.2f} "
                           f"| {s['val_acc']:.3f} |")
        out.append("")

    if results.get("startup"):
        startup = results["startup"]
        out += ["## Start-up", "", f"Median wall time of the whole process (`{startup['command']}`, "
                f"{startup.get('install', 'as installed here')}).", "",
                "| command | s |", "|---|---|"]
        out += [f"| `{name}` | {v['median_s']:.2f} |" for name, v in startup.items() if isinstance(v, dict)]
        out.append("")

    if results.get("fixed"):
        fixed = results["fixed"]
        out += ["## Fixed cost of `dlrun train`", "",
                f"`{fixed['command']}` on an existing store: {fixed['wall_s']:.2f} s of wall time (the median of "
                f"{len(fixed.get('runs_s', [0]))}), less its one "
                f"epoch ({_f(fixed['epoch_s'])} s, as the loops measured it): {_f(fixed['fixed_s'])} s.", ""]

    if results.get("sweeps"):
        sweeps = results["sweeps"]
        dlrun, peer, long = sweeps["runs"]["1"], sweeps["peer"], sweeps.get("long") or {"runs": {}}
        out += ["## Sweep throughput", "",
                f"{sweeps['trials']} trials, iris MLP, {sweeps['epochs']} epochs each, TPE, no pruning: `dlrun sweep` "
                "against bench/optuna_peer.py (the same trials by hand: Optuna, a plain PyTorch loop, each trial's "
                "params and final metrics logged to MLflow, in the same store). Wall time of the whole process, "
                "imports included; training is the trials' summed `fit_seconds` (dlrun's). On a full run each "
                "comparison here and below runs in the order A B B A, each figure the mean of its two turns.", "",
                "| study | wall s | training s | trials per minute |", "|---|---|---|---|",
                f"| dlrun sweep | {dlrun['wall_s']:.1f} | {dlrun['fit_seconds']:.1f} | {dlrun['trials_per_minute']:.1f} |",
                f"| hand-written Optuna | {peer['wall_s']:.1f} | | {peer['trials_per_minute']:.1f} |", ""]
        if long["runs"]:
            out += [f"Trials of at least 5 s: {long['trials']} trials of the digits CNN, {long['epochs']} epochs each, "
                    "random sampler, no pruning.", "",
                    "| n_jobs | wall s | training s | trials per minute |", "|---|---|---|---|"]
            out += [f"| {jobs} | {v['wall_s']:.1f} | {v['fit_seconds']:.1f} | {v['trials_per_minute']:.1f} |"
                    for jobs, v in long["runs"].items()]
            out.append("")

    if results.get("pruning"):
        pruning = results["pruning"]
        out += ["## Pruned against unpruned", "",
                f"{pruning['trials']} trials, digits MLP, {pruning['epochs']} epochs, TPE seed 0; training time is "
                "the sum of the trials' `fit_seconds`.", "",
                "| study | fit s | epochs | wall s | best val/acc | trial states |", "|---|---|---|---|---|---|"]
        out += [f"| {name} | {s['fit_seconds']:.1f} | {s['epochs']} | {s['wall_s']:.0f} | {s['best_value']:.4f} "
                f"| {s['states']} |" for name, s in pruning["studies"].items()]
        out.append("")
    return "\n".join(out)
