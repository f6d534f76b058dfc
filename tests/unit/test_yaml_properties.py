"""Property: any YAML, as a user's config file or as a sweep file, is validated to exit 0 or 2, never a
traceback, and validation writes nothing (hypothesis draws the text).

The YAML is random nested mappings, lists and scalars written out with yaml.safe_dump, raw text that
is mostly not valid YAML, and documents with python tags, duplicate keys or interpolations.
A config file is validated by `dlrun train GROUP=random --cfg`. `dlrun sweep` has no dry run, so
the sweep property runs the real command with the study's creation replaced by a clean exit 0:
every check of the file, its params and its base run runs, and no trial does.
"""

from __future__ import annotations

import string
from pathlib import Path
from unittest import mock

import pytest
import typer
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()
PROPERTY = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["${missing.key}", "${optim.lr}", "${model.width}", "${oc.env:HOME}", "???", "adam", "linear",
                     "flatten", "conv2d", "interval(0.01, 0.1)", "choice(adam, sgd)", "tag(log, interval(1e-4, 1))",
                     "range(1, 5)", "glob(*)", "data=iris", "val/acc", "tpe", "median"]),
)
KEYS = st.one_of(
    st.sampled_from(["name", "lr", "layers", "type", "out_features", "width", "batch_size", "max_epochs",
                     "early_stopping", "patience", "defaults", "_target_", "params", "overrides", "n_trials", "sampler",
                     "pruner", "metric", "direction", "optim.lr", "optim", "model.width", "val_fraction", "hydra"]),
    st.text(alphabet=string.ascii_letters + "_.-+~", min_size=1, max_size=10),
)
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
                     max_leaves=12)
ODD_DOCUMENTS = st.sampled_from([
    "lr: !!python/object/apply:os.system ['echo pwned']\n", "!!python/name:os.system\n", "a: &x [*x]\n",
    "name: adam\nlr: 0.1\nlr: 0.2\n", "layers:\n\t- {type: flatten}\n", "--- a\n--- b\n", "? [a, b]\n: 1\n",
    "a: {b: [c, {d: e]}\n", "'unterminated\n", "<<: {x: 1}\n", "%YAML 1.1\n---\nx: 1\n", "\ufeffname: adam\n",
])
YAML_TEXT = st.one_of(
    TREES.map(lambda tree: yaml.safe_dump(tree)),
    st.text(alphabet=string.printable, max_size=80),
    ODD_DOCUMENTS,
    st.tuples(TREES, st.text(alphabet=string.printable, max_size=20)).map(lambda t: yaml.safe_dump(t[0]) + t[1]),
)
# Each group's file as it would be valid, so that a few drawn keys on top reach the deeper checks.
SOUND = {
    "model": {"layers": [{"type": "flatten"}, {"type": "linear", "out_features": 3}]},
    "optim": {"name": "adam", "lr": 0.01},
    "data": {"name": "iris", "batch_size": 8, "val_fraction": 0.2, "test_fraction": 0.2},
    "trainer": {"max_epochs": 1},
    "regularization": {"l2": 0.0},
    "activation": {"name": "relu"},
    "scheduler": {"name": "none"},
    "loss": {"name": "cross_entropy"},
}
NEAR_SOUND = {group: st.dictionaries(KEYS, TREES, max_size=2).map(lambda extra, sound=sound: yaml.safe_dump({**sound, **extra}))
              for group, sound in SOUND.items()}
GROUP_AND_TEXT = st.sampled_from(sorted(SOUND)).flatmap(
    lambda group: st.tuples(st.just(group), st.one_of(YAML_TEXT, NEAR_SOUND[group])))

SWEEP_BASE = ["data=iris", "tracking.log_model=false", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
SEARCHED_KEYS = st.sampled_from(["optim.lr", "optim", "model.width", "data.batch_size", "regularization.dropout",
                                 "trainer.max_epochs", "seed", "activation", "+model.blocks"])
EXPRESSIONS = st.one_of(
    st.sampled_from(["interval(0.01, 0.1)", "tag(log, interval(1e-4, 1e-1))", "tag(int, interval(1, 8))", "range(1, 4)",
                     "choice(adam, sgd)", "choice(relu, tanh)", "glob(*)", "glob(ad*)", "choice(0.1, 0.2)", "1,2,3",
                     "interval(1, 0)", "range(5, 1)", "choice()", "tag(loog, interval(0, 1))", "choice(a"]),
    SCALARS, TREES)
# A sweep file whose base run is sound, with drawn params and keys: it gets past the first checks.
SWEEP_DOCUMENTS = st.fixed_dictionaries(
    {"overrides": st.just(SWEEP_BASE), "params": st.dictionaries(SEARCHED_KEYS, EXPRESSIONS, min_size=1, max_size=3)},
    optional={"metric": st.one_of(st.sampled_from(["val/loss", "val/acc", "val/mae", "test/acc"]), TREES),
              "direction": st.one_of(st.sampled_from(["minimize", "maximize"]), TREES),
              "n_trials": st.one_of(st.integers(-1, 5), TREES),
              "sampler": st.one_of(st.sampled_from(["tpe", "random", "grid", "cmaes"]), TREES),
              "pruner": st.one_of(st.sampled_from(["none", "median", "hyperband"]), TREES)},
).map(lambda doc: yaml.safe_dump(doc))


def assert_clean(result) -> None:
    event(f"exit {result.exit_code}: {result.output.replace(str(Path.cwd()), '.')[:50]}")  # the mix of outcomes, in --hypothesis-show-statistics
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def assert_nothing_recorded(folder) -> None:
    leftovers = [name for name in ("mlflow.db", "mlruns", "outputs", "optuna") if (folder / name).exists()]
    assert not leftovers, f"validation wrote {leftovers}"


@pytest.fixture
def conf(workdir):
    for group in SOUND:
        (workdir / "conf" / group).mkdir(parents=True)
    return workdir


@PROPERTY
@given(group_and_text=GROUP_AND_TEXT)
def test_any_yaml_as_a_config_file_is_exit_0_or_2(conf, group_and_text):
    group, text = group_and_text
    (conf / "conf" / group / "random.yaml").write_text(text, encoding="utf-8")
    assert_clean(runner.invoke(app, ["train", "--cfg", f"{group}=random"]))
    assert_nothing_recorded(conf)


def stop_before_the_study(*args, **kwargs):
    """The sweep passed every check: end here, before any storage or run is touched."""
    raise typer.Exit(0)


@PROPERTY
@given(text=st.one_of(YAML_TEXT, SWEEP_DOCUMENTS))
def test_any_yaml_as_a_sweep_file_is_exit_0_or_2(workdir, text):
    (workdir / "random.yaml").write_text(text, encoding="utf-8")
    with mock.patch("dlrun.tuning.storage.create_or_join", side_effect=stop_before_the_study):
        result = runner.invoke(app, ["sweep", "random.yaml"])
    assert_clean(result)
    assert_nothing_recorded(workdir)
