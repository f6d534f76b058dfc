"""Malformed input of every kind gets exit 2 and one clear message, with no traceback and nothing recorded.

One table: each case has a category, the files it writes into a fresh working folder, the dlrun
command line, and the fragments the message must hold (the culprit and, where there is one, the fix).
Cases that need a run id of a real store run in a store made once for the module: one tiny dlrun
training run, a run of another tool (plain MLflow, another experiment) and a foreign run in dlrun's
experiment whose config.yaml dlrun did not write. Every case asserts that no MLflow run appeared.

Complements, without repeating, test_bad_input.py (overrides), test_sweep_bad_input.py (sweep
files), test_lifecycle.py (run ids) and test_data_cli.py (data sources).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import mlflow_runs

runner = CliRunner()

OPTIONS, OVERRIDES, CONFIG_FILES, SWEEP_FILES, DATA_FILES, RUN_IDS = (
    "options", "overrides", "config files", "sweep files", "data files", "run ids")
QUICK = ["trainer.max_epochs=1", "tracking.log_model=false", "trainer.enable_progress_bar=false"]
CSV = ["train", "data=csv", "data.path=d.csv", "data.target=y", *QUICK]
NPZ = ["train", "data=npz", "data.path=d.npz", *QUICK]
SWEEP = ["sweep", "bad.yaml"]
SWEEP_BASE = "overrides: [data=iris, tracking.log_model=false, trainer.max_epochs=1, trainer.enable_progress_bar=false]\n"
LR = "params: {optim.lr: 'interval(0.01, 0.1)'}\n"
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
# Placeholders for the ids of the module's store, filled in by the test.
DLRUN_RUN, OTHER_TOOL_RUN, FOREIGN_CONFIG_RUN, ENDLESS_CONFIG_RUN = (
    "{dlrun_run}", "{other_tool_run}", "{foreign_config_run}", "{endless_config_run}")


@dataclass(frozen=True)
class Case:
    category: str
    argv: list[str]
    fragments: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    in_store: bool = False  # run in the module's store folder (run-id cases), not in an empty one


def case(case_id: str, category: str, argv: list[str], fragments: list[str], files: dict | None = None,
         in_store: bool = False):
    return pytest.param(Case(category, argv, fragments, files or {}, in_store), id=f"{category}: {case_id}")


def rows(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def good_csv(delimiter: str = ",", replace: tuple[str, str] = ("", "")) -> str:
    """40 rows of two numeric features and a balanced binary target y; one line changed by `replace`."""
    lines = ["x1,x2,y"] + [f"{i},{i * 2 % 7},{i % 2}" for i in range(40)]
    text = rows(*lines).replace(*replace) if replace[0] else rows(*lines)
    return text.replace(",", delimiter)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


TWO_CLASSES = np.arange(40) % 2

CASES = [
    # --- command-line options of train, sweep, runs, eval, predict, reproduce ---
    case("jobs-negative", OPTIONS, ["train", "-m", "--jobs", "-3", "optim=adam,sgd", "data=iris", *QUICK],
         ["Invalid value for '--jobs'", "greater than or equal to 1"]),
    case("jobs-not-a-number", OPTIONS, ["train", "-m", "--jobs", "abc", "optim=adam,sgd"],
         ["Invalid value for '--jobs'", "valid integer"]),
    case("metric-without-value", OPTIONS, ["train", "--metric"], ["'--metric' requires an argument"]),
    case("config-dir-is-a-file", OPTIONS, ["train", "--config-dir", "notes.txt", "--cfg"],
         ["--config-dir: no folder at 'notes.txt'"], {"notes.txt": "not a folder\n"}),
    case("tracking-uri-unknown-scheme", OPTIONS, ["runs", "--tracking-uri", "ftp://host/store"],
         ["cannot open the MLflow store 'ftp://host/store'", "--tracking-uri", "sqlite:///FILE.db"]),
    case("tracking-uri-plain-path", OPTIONS, ["eval", UNKNOWN_ID, "--tracking-uri", "mlflow.db"],
         ["cannot open the MLflow store 'mlflow.db'", "sqlite:///FILE.db"]),
    case("tracking-uri-no-such-store", OPTIONS, ["predict", UNKNOWN_ID, "-i", "x.csv", "-o", "p.csv",
                                                 "--tracking-uri", "sqlite:///nodir/store.db"],
         ["no MLflow store at nodir/store.db", "--tracking-uri"]),
    case("runs-limit-zero", OPTIONS, ["runs", "--limit", "0"], ["Invalid value for '--limit'", "greater than or equal to 1"]),
    case("runs-unknown-experiment", OPTIONS, ["runs", "--experiment", "dlrnu"], ["no experiment 'dlrnu'", "dlrun"],
         in_store=True),
    case("runs-bad-sort", OPTIONS, ["runs", "--sort", "metrics.`test/acc` SIDEWAYS"], ["bad --filter or --sort"],
         in_store=True),
    case("reproduce-negative-atol", OPTIONS, ["reproduce", UNKNOWN_ID, "--atol", "-1"],
         ["Invalid value for '--atol'", "greater than or equal to 0"]),
    case("predict-without-input", OPTIONS, ["predict", UNKNOWN_ID, "-o", "p.csv"], ["Missing option '--input'"]),
    case("sweep-threads-not-a-number", OPTIONS, ["sweep", "bad.yaml", "--threads", "two"],
         ["Invalid value for '--threads'", "valid integer"], {"bad.yaml": SWEEP_BASE + LR}),

    # --- overrides (beyond test_bad_input.py) ---
    case("special-character-unquoted", OVERRIDES, ["train", "data=iris", "data.delimiter=;"],
         ["cannot parse override 'data.delimiter=;'", "KEY='VALUE'"]),
    case("unclosed-list", OVERRIDES, ["train", "optim.lr=[1,2"], ["cannot parse override 'optim.lr=[1,2'", "Quote"]),
    case("infinite-learning-rate", OVERRIDES, ["train", "optim.lr=inf"], ["'optim.lr' must be a finite number", "inf"]),
    case("epochs-overflow", OVERRIDES, ["train", "trainer.max_epochs=1e9999"],
         ["'trainer.max_epochs' must be an integer", "inf"]),
    case("tracking-uri-unknown-scheme", OVERRIDES, ["train", "tracking.uri=ftp://host/store"],
         ["'tracking.uri' 'ftp://host/store'", "sqlite:///FILE.db"]),
    case("tracking-uri-plain-path", OVERRIDES, ["train", "tracking.uri=runs.db"], ["'tracking.uri' 'runs.db'", "sqlite:///"]),
    case("seed-fractional", OVERRIDES, ["train", "seed=1.5"], ["'seed' must be an integer", "1.5"]),
    case("monitor-misspelt", OVERRIDES, ["train", "trainer.early_stopping.monitor=val/accc"],
         ["'val/accc'", "trainer.early_stopping.monitor", "Did you mean 'val/acc'?"]),
    case("bool-not-a-bool", OVERRIDES, ["train", "tracking.log_model=maybe"],
         ["'tracking.log_model' must be true or false", "'maybe'"]),
    case("dropout-one", OVERRIDES, ["train", "regularization.dropout=1"], ["'regularization.dropout' must be less than 1"]),
    case("scheduler-misspelt", OVERRIDES, ["train", "scheduler=cosinee"],
         ["unknown scheduler option 'cosinee'", "Did you mean 'cosine'?"]),
    case("output-dir-a-list", OVERRIDES, ["train", "output_dir=[a]"], ["'output_dir' must be a string"]),

    # --- the user's config files under ./conf/<group>/ (or --config-dir) ---
    case("yaml-unclosed-mapping", CONFIG_FILES, ["train", "model=x"],
         ["not valid YAML", "conf/model/x.yaml", "line 2", "Fix that file"], {"conf/model/x.yaml": "layers:\n  - {type: flatten\n"}),
    case("yaml-tab-indent", CONFIG_FILES, ["train", "model=x"], ["not valid YAML", "conf/model/x.yaml", "'\\t'"],
         {"conf/model/x.yaml": "layers:\n\t- {type: flatten}\n"}),
    case("yaml-duplicate-key", CONFIG_FILES, ["train", "optim=x"], ["conf/optim/x.yaml", "duplicate key lr"],
         {"conf/optim/x.yaml": "name: adam\nlr: 0.1\nlr: 0.2\n"}),
    case("yaml-python-tag", CONFIG_FILES, ["train", "optim=x"], ["python tags are refused", "conf/optim/x.yaml"],
         {"conf/optim/x.yaml": "name: adam\nlr: !!python/object/apply:os.system ['echo hi']\n"}),
    case("mapping-where-list-expected", CONFIG_FILES, ["train", "model=x"], ["'model.layers' must be a non-empty list"],
         {"conf/model/x.yaml": "layers: {type: flatten}\n"}),
    case("list-where-mapping-expected", CONFIG_FILES, ["train", "optim=x"], ["'optim' must be a mapping", "['adam', 'sgd']"],
         {"conf/optim/x.yaml": "- adam\n- sgd\n"}),
    case("string-where-number-expected", CONFIG_FILES, ["train", "optim=x"], ["'optim.lr' must be a number", "'fast'"],
         {"conf/optim/x.yaml": "name: adam\nlr: fast\n"}),
    case("string-where-integer-expected", CONFIG_FILES, ["train", "data=x"], ["'data.batch_size' must be an integer", "'many'"],
         {"conf/data/x.yaml": "name: iris\nbatch_size: many\nval_fraction: 0.2\ntest_fraction: 0.2\n"}),
    case("list-where-number-expected", CONFIG_FILES, ["train", "regularization=x"],
         ["'regularization.l2' must be a number", "[1, 2]"], {"conf/regularization/x.yaml": "l2: [1, 2]\n"}),
    case("unknown-key-depth-1", CONFIG_FILES, ["train", "optim=x"], ["unknown key 'optim.lrr'", "Did you mean 'lr'?"],
         {"conf/optim/x.yaml": "name: adam\nlrr: 0.1\n"}),
    case("unknown-key-depth-2", CONFIG_FILES, ["train", "trainer=x"],
         ["unknown config key 'trainer.early_stopping.patiense'", "Did you mean 'patience'?"],
         {"conf/trainer/x.yaml": "max_epochs: 1\nearly_stopping:\n  patiense: 3\n"}),
    case("unknown-key-depth-3", CONFIG_FILES, ["train", "model=x"],
         ["unknown key 'model.layers[1].layers[0].out_featurs'", "Did you mean 'out_features'?"],
         {"conf/model/x.yaml": "layers:\n  - {type: flatten}\n  - {type: repeat, times: 2, layers: "
                               "[{type: linear, out_featurs: 3}]}\n"}),
    case("interpolation-to-missing-key", CONFIG_FILES, ["train", "optim=x"],
         ["cannot resolve the config at 'optim.lr'", "missing.key"], {"conf/optim/x.yaml": "name: adam\nlr: ${missing.key}\n"}),
    case("interpolation-misspelt", CONFIG_FILES, ["train", "model=x"], ["cannot resolve the config at 'model.layers", "widht"],
         {"conf/model/x.yaml": "width: 8\nlayers:\n  - type: flatten\n  - type: linear\n    out_features: ${model.widht}\n"}),
    case("defaults-to-missing-option", CONFIG_FILES, ["train", "model=x"], ["model/nope"],
         {"conf/model/x.yaml": "defaults:\n  - nope\nlayers: [{type: flatten}]\n"}),
    case("number-instead-of-keys", CONFIG_FILES, ["train", "model=x"], ["conf/model/x.yaml is not a mapping of keys",
                                                                        "KEY: VALUE"], {"conf/model/x.yaml": "3\n"}),
    case("alias-inside-its-own-anchor", CONFIG_FILES, ["train", "activation=x"],
         ["conf/activation/x.yaml holds a value that contains itself"], {"conf/activation/x.yaml": "a: &x [*x]\n"}),
    case("empty-file", CONFIG_FILES, ["train", "optim=x"], ["the 'optim' config needs a 'name' key"], {"conf/optim/x.yaml": ""}),
    case("train-yaml-without-defaults", CONFIG_FILES, ["train"], ["the config lacks data, model", "keep the defaults list"],
         {"conf/train.yaml": "seed: 1\n"}),
    case("config-dir-with-bad-file", CONFIG_FILES, ["train", "--config-dir", "mine", "optim=x"],
         ["mine/optim/x.yaml", "not valid YAML"], {"mine/optim/x.yaml": "name: adam\nlr: [\n"}),

    # --- sweep files (beyond test_sweep_bad_input.py) ---
    case("duplicate-param", SWEEP_FILES, SWEEP, ["bad.yaml", "found duplicate key 'optim.lr'"],
         {"bad.yaml": SWEEP_BASE + "params:\n  optim.lr: 'interval(0.01, 0.1)'\n  optim.lr: 'interval(0.01, 0.2)'\n"}),
    case("tag-misspelt", SWEEP_FILES, SWEEP, ["bad.yaml, params.optim.lr", "unknown tag 'loog'", "Did you mean 'log'?"],
         {"bad.yaml": SWEEP_BASE + "params: {optim.lr: 'tag(loog, interval(0.01, 0.1))'}\n"}),
    case("interval-infinite", SWEEP_FILES, SWEEP, ["bad.yaml, params.optim.lr", "interval(0.01, inf) needs finite bounds"],
         {"bad.yaml": SWEEP_BASE + "params: {optim.lr: 'interval(0.01, inf)'}\n"}),
    case("python-tag", SWEEP_FILES, SWEEP, ["bad.yaml", "not valid YAML", "python/object/apply:os.system"],
         {"bad.yaml": "params: !!python/object/apply:os.system ['echo hi']\n"}),
    case("overrides-not-strings", SWEEP_FILES, SWEEP, ["bad.yaml", "'overrides' must be a list of override strings"],
         {"bad.yaml": "overrides: [1, 2]\n" + LR}),
    case("n-jobs-negative", SWEEP_FILES, SWEEP, ["bad.yaml", "'n_jobs' must be a whole number of at least 1", "-1"],
         {"bad.yaml": SWEEP_BASE + "n_jobs: -1\n" + LR}),
    case("metric-a-list", SWEEP_FILES, SWEEP, ["bad.yaml", "'metric' must be a metric name", "['val/acc']"],
         {"bad.yaml": SWEEP_BASE + "metric: [val/acc]\n" + LR}),
    case("param-interpolation-to-missing-key", SWEEP_FILES, SWEEP, ["bad.yaml", "cannot resolve the config at 'optim.lr'",
                                                                   "missing.key"],
         {"bad.yaml": SWEEP_BASE + "params: {optim.lr: '${missing.key}'}\n"}),
    case("base-uses-broken-config-file", SWEEP_FILES, SWEEP, ["bad.yaml", "conf/optim/x.yaml", "not valid YAML"],
         {"bad.yaml": "overrides: [data=iris, optim=x]\n" + LR, "conf/optim/x.yaml": "name: adam\nlr: [\n"}),
    case("base-data-file-missing", SWEEP_FILES, SWEEP, ["bad.yaml", "the base run", "no file at 'none.csv'"],
         {"bad.yaml": "overrides: [data=csv, data.path=none.csv, data.target=y]\n" + LR}),

    # --- data files: data=csv and data=npz ---
    case("csv-empty", DATA_FILES, CSV, ["'d.csv' is empty", "header row"], {"d.csv": ""}),
    case("csv-header-only", DATA_FILES, CSV, ["'d.csv' has a header but no data rows"], {"d.csv": "x1,x2,y\n"}),
    case("csv-wrong-delimiter", DATA_FILES, CSV, ["column 'y' (data.target) is not in d.csv", "data.delimiter"],
         {"d.csv": good_csv(";")}),
    case("csv-nan-feature", DATA_FILES, CSV, ["d.csv", "columns x1", "NaN", "fill or drop those rows"],
         {"d.csv": good_csv(replace=("\n3,6,1\n", "\nnan,6,1\n"))}),
    case("csv-infinite-feature", DATA_FILES, CSV, ["d.csv", "columns x2", "infinite"],
         {"d.csv": good_csv(replace=("\n3,6,1\n", "\n3,inf,1\n"))}),
    case("csv-feature-beyond-float32", DATA_FILES, CSV, ["d.csv", "columns x1", "beyond float32"],
         {"d.csv": good_csv(replace=("\n3,6,1\n", "\n1e40,6,1\n"))}),
    case("csv-infinite-regression-target", DATA_FILES, [*CSV, "data.task=regression"],
         ["d.csv", "target column 'y' holds infinite", "fix or drop those rows"],
         {"d.csv": good_csv(replace=("\n3,6,1\n", "\n3,6,inf\n"))}),
    case("csv-non-numeric-regression-target", DATA_FILES, [*CSV, "data.task=regression"],
         ["d.csv", "needs a numeric target", "'y' is not numeric"], {"d.csv": good_csv(replace=("\n3,6,1\n", "\n3,6,cat\n"))}),
    case("csv-empty-target-value", DATA_FILES, CSV, ["target column 'y' has empty values"],
         {"d.csv": good_csv(replace=("\n3,6,1\n", "\n3,6,\n"))}),
    case("csv-ragged-row", DATA_FILES, CSV, ["cannot read 'd.csv' as CSV", "line 5"],
         {"d.csv": good_csv(replace=("\n3,6,1\n", "\n3,6,1,9\n"))}),
    case("csv-single-class", DATA_FILES, CSV, ["the target 'y' has a single class", "two or more"],
         {"d.csv": rows("x1,x2,y", *(f"{i},{i},1" for i in range(40)))}),
    case("csv-fewer-rows-than-the-split", DATA_FILES, CSV, ["2 rows", "leave an empty split", "Use more rows"],
         {"d.csv": rows("x1,x2,y", "1,2,0", "3,4,1")}),
    case("csv-class-too-small-to-stratify", DATA_FILES, CSV, ["cannot split 8 rows", "stratified", "Use more rows"],
         {"d.csv": rows("x1,x2,y", *(f"{i},{i},{i % 5}" for i in range(8)))}),
    case("csv-target-only", DATA_FILES, CSV, ["no feature columns besides the target 'y'"],
         {"d.csv": rows("y", *(str(i % 2) for i in range(40)))}),
    case("csv-path-is-a-folder", DATA_FILES, [*CSV, "data.path=."], ["no file at '.'", "data.path=FILE"]),
    case("npz-not-an-archive", DATA_FILES, NPZ, ["cannot read 'd.npz' as a NumPy .npz archive: it is not a zip file", "numpy.savez"],
         {"d.npz": "x,y\n1,2\n"}),
    case("npz-one-dimensional-features", DATA_FILES, NPZ, ["'x' has shape (40,)", "x.reshape(-1, 1)"],
         {"d.npz": npz_bytes(x=np.arange(40.0), y=TWO_CLASSES)}),
    case("npz-lengths-differ", DATA_FILES, NPZ, ["'x' has 40 samples", "'y' has 39"],
         {"d.npz": npz_bytes(x=np.zeros((40, 2)), y=TWO_CLASSES[:39])}),
    case("npz-nan-features", DATA_FILES, NPZ, ["'x' holds NaN"],
         {"d.npz": npz_bytes(x=np.where(np.eye(40, 2) > 0, np.nan, 1.0), y=TWO_CLASSES)}),
    case("npz-single-class", DATA_FILES, NPZ, ["'y' holds a single class", "two or more"],
         {"d.npz": npz_bytes(x=np.random.default_rng(0).normal(size=(40, 2)), y=np.ones(40, dtype=int))}),
    case("npz-missing-array", DATA_FILES, NPZ, ["has no array 'x' (data.x_key)", "Did you mean 'X'?"],
         {"d.npz": npz_bytes(X=np.zeros((40, 2)), y=TWO_CLASSES)}),
    case("predict-input-without-header", DATA_FILES, ["predict", DLRUN_RUN, "-i", "in.csv", "-o", "p.csv"],
         ["--input", "'in.csv' has no header row", "Add a header row"], {"in.csv": "1,2,3,4\n5,6,7,8\n"}, in_store=True),

    # --- run ids of eval, predict, resume, reproduce ---
    case("predict-malformed", RUN_IDS, ["predict", "../etc", "-i", "x.csv", "-o", "p.csv"],
         ["'../etc' is not an MLflow run id", "32 hex digits"]),
    case("resume-uppercase", RUN_IDS, ["resume", UNKNOWN_ID.upper()], ["is not an MLflow run id", "32 hex digits"]),
    case("eval-too-short", RUN_IDS, ["eval", UNKNOWN_ID[:-1]], ["is not an MLflow run id"]),
    case("resume-unknown", RUN_IDS, ["resume", UNKNOWN_ID], [f"no run {UNKNOWN_ID}", "`dlrun runs` lists the runs"],
         in_store=True),
    case("predict-unknown", RUN_IDS, ["predict", UNKNOWN_ID, "-i", "x.csv", "-o", "p.csv"], [f"no run {UNKNOWN_ID}"],
         in_store=True),
    case("eval-unknown-without-store", RUN_IDS, ["eval", UNKNOWN_ID], ["no MLflow store at", "--tracking-uri"]),
    case("eval-run-of-another-tool", RUN_IDS, ["eval", OTHER_TOOL_RUN], [f"run {OTHER_TOOL_RUN} has no config.yaml",
                                                                          "not made by `dlrun train`"], in_store=True),
    case("predict-run-of-another-tool", RUN_IDS, ["predict", OTHER_TOOL_RUN, "-i", "x.csv", "-o", "p.csv"],
         ["has no config.yaml", "not made by `dlrun train`"], in_store=True),
    case("resume-run-of-another-tool", RUN_IDS, ["resume", OTHER_TOOL_RUN], ["has no config.yaml"], in_store=True),
    case("reproduce-run-of-another-tool", RUN_IDS, ["reproduce", OTHER_TOOL_RUN], ["has no config.yaml"], in_store=True),
    case("reproduce-foreign-config", RUN_IDS, ["reproduce", FOREIGN_CONFIG_RUN],
         [f"the config.yaml of run {FOREIGN_CONFIG_RUN}", "unknown config key 'lr'"], in_store=True),
    case("eval-config-that-contains-itself", RUN_IDS, ["eval", ENDLESS_CONFIG_RUN],
         [f"the config.yaml of run {ENDLESS_CONFIG_RUN} holds a value that contains itself"], in_store=True),
    case("resume-finished-run", RUN_IDS, ["resume", DLRUN_RUN], ["is FINISHED", f"dlrun resume {DLRUN_RUN} trainer.max_epochs=N"],
         in_store=True),
    case("resume-not-longer", RUN_IDS, ["resume", DLRUN_RUN, "trainer.max_epochs=1"],
         ["already trained 1 epochs", "trainer.max_epochs above 1"], in_store=True),
    case("reproduce-override-misspelt", RUN_IDS, ["reproduce", DLRUN_RUN, "optim.lrr=3"],
         ["cannot apply 'optim.lrr=3'", "Did you mean 'optim.lr'?"], in_store=True),
    case("reproduce-override-invalid", RUN_IDS, ["reproduce", DLRUN_RUN, "optim.lr=-1"],
         [f"the config.yaml of run {DLRUN_RUN} with optim.lr=-1", "'optim.lr' must be greater than 0"], in_store=True),
    case("eval-group-override", RUN_IDS, ["eval", DLRUN_RUN, "model=cnn"], ["eval takes data overrides only", "model=cnn"],
         in_store=True),
    case("predict-run-without-model", RUN_IDS, ["predict", DLRUN_RUN, "-i", "in.csv", "-o", "p.csv"],
         [f"run {DLRUN_RUN} logged no model", "tracking.log_model=false"],
         {"in.csv": rows("a,b,c,d", "1,2,3,4")}, in_store=True),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder with dlrun's store: one tiny dlrun run, a run of another tool, and two runs in dlrun's
    experiment whose config.yaml someone else wrote."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        done = runner.invoke(app, ["train", "data=iris", *QUICK])
    assert done.exit_code == 0, done.output
    dlrun_run = done.output.strip().splitlines()[-1].removeprefix("run_id: ")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    other = client.create_run(client.create_experiment("another-tool")).info.run_id
    client.set_terminated(other)
    forged = {FOREIGN_CONFIG_RUN: "lr: 0.1\nepochs: 3\n", ENDLESS_CONFIG_RUN: "data: &x {name: [*x]}\n"}
    ids = {DLRUN_RUN: dlrun_run, OTHER_TOOL_RUN: other}
    for placeholder, config_text in forged.items():
        ids[placeholder] = client.create_run(client.get_experiment_by_name("dlrun").experiment_id).info.run_id
        client.log_text(ids[placeholder], config_text, "config.yaml")
        client.set_terminated(ids[placeholder])
    return folder, ids


def fill(text: str, ids: dict[str, str]) -> str:
    for placeholder, run_id in ids.items():
        text = text.replace(placeholder, run_id)
    return text


def all_run_ids(folder: Path) -> set[str]:
    client, _ = mlflow_runs(folder / "mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(experiments)}


def readable(output: str) -> str:
    """The output with the box of a usage error taken off and its wrapped lines joined."""
    return " ".join(output.replace("│", " ").split())


def assert_one_message(output: str) -> None:
    """dlrun's own errors are one line `error: ...`; a usage error is Typer's usage, hint and one Error box."""
    lines = [line for line in output.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("error: ")]
    if own:
        assert lines == own[:1], f"more than the one error line: {lines}"
        return
    headers = [line for line in lines if re.match(r"^(╭─ Error ─|Error: )", line)]
    assert len(headers) == 1, f"not one usage error: {lines}"
    assert all(line[0] in "╭│╰" or line.startswith(("Usage:", "Try ", "Error: ")) for line in lines), lines


def write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("bad", CASES)
def test_malformed_input_is_rejected_with_one_message(bad: Case, request, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if bad.in_store:
        folder, ids = request.getfixturevalue("store")
        runs_before, outputs_before = all_run_ids(folder), sorted((folder / "outputs").iterdir())
    else:
        folder, ids = tmp_path, {}
    monkeypatch.chdir(folder)
    write_files(folder, bad.files)
    try:
        result = runner.invoke(app, [fill(arg, ids) for arg in bad.argv])
    finally:
        for name in bad.files:
            if bad.in_store:
                (folder / name).unlink()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert_one_message(result.output)
    text = readable(result.output)
    for fragment in bad.fragments:
        assert fill(fragment, ids) in text, f"{fill(fragment, ids)!r} not in {text!r}"
    if bad.in_store:
        assert all_run_ids(folder) == runs_before, "a rejected command created an MLflow run"
        assert sorted((folder / "outputs").iterdir()) == outputs_before
    else:
        left = sorted(p.name for p in folder.iterdir())
        assert left == sorted({name.split("/")[0] for name in bad.files}), f"a rejected command wrote {left}"


def test_the_table_covers_every_category_with_at_least_four_cases():
    counts: dict[str, int] = {}
    for param in CASES:
        counts[param.values[0].category] = counts.get(param.values[0].category, 0) + 1
    assert set(counts) == {OPTIONS, OVERRIDES, CONFIG_FILES, SWEEP_FILES, DATA_FILES, RUN_IDS}
    assert min(counts.values()) >= 4 and sum(counts.values()) >= 40, counts


def test_a_tracking_uri_from_the_environment_is_checked_like_the_override(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://host/store")
    result = runner.invoke(app, ["train", "data=iris", *QUICK])
    assert result.exit_code == 2, result.output
    assert_one_message(result.output)
    assert "$MLFLOW_TRACKING_URI 'ftp://host/store'" in readable(result.output)
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("uri, allow_file_store, accepted", [
    ("file:///tmp/mlruns", None, False),  # MLflow 3 refuses its file store unless told otherwise
    ("file:///tmp/mlruns", "true", True),
    ("file:///tmp/mlruns", "false", False),
    ("databricks", None, True), ("databricks-uc", None, True), ("uc", None, True),
    ("databricks://profile", None, True), ("uc://profile", None, True),
    ("postgresql+psycopg2://host/db", None, True), ("databricks-typo", None, False),
])
def test_tracking_uris_mlflow_opens_pass_and_others_are_named(uri, allow_file_store, accepted, monkeypatch):
    from dlrun.config.validate import _check_tracking_uri
    from dlrun.errors import ConfigError

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    if allow_file_store is not None:
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", allow_file_store)
    if accepted:
        _check_tracking_uri(uri)
        return
    with pytest.raises(ConfigError) as refused:
        _check_tracking_uri(uri)
    assert f"'tracking.uri' {uri!r}" in str(refused.value) and "sqlite:///" in str(refused.value)
    if uri.startswith("file:"):
        assert "MLFLOW_ALLOW_FILE_STORE=true" in str(refused.value)


def test_a_bare_databricks_tracking_uri_passes_validation(workdir):
    from tests.conftest import run_dlrun

    result = run_dlrun("train", "tracking.uri=databricks", "--cfg", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "uri: databricks" in result.stdout
    assert list(workdir.iterdir()) == []


def test_a_config_file_that_cannot_be_read_is_named_with_the_os_error(tmp_path, monkeypatch):
    import builtins
    import errno

    from hydra._internal.core_plugins import file_config_source

    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, {"conf/model/x.yaml": "layers: [{type: flatten}]\n"})
    unreadable = tmp_path / "conf" / "model" / "x.yaml"

    def open_refusing(path, *args, **kwargs):  # as a file without read permission (root reads any file)
        if Path(path) == unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(file_config_source, "open", open_refusing, raising=False)
    result = runner.invoke(app, ["train", "model=x", *QUICK])
    assert result.exit_code == 2, result.output
    assert_one_message(result.output)
    assert f"cannot read the config file {unreadable}: Permission denied" in readable(result.output)
    assert "not a mapping of keys" not in result.output
