"""A study composes its base once and applies each trial's values to it: the configs must be exactly
the ones a whole composition gives; and the served model goes to the trial dlrun names the best."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dlrun.config.compose import compose, composer
from dlrun.errors import ConfigError
from dlrun.tuning.check import TrialConfigs, compose_run
from dlrun.tuning.trial_loop import _beats

BASE = ["data=iris", "model=mlp", "trainer.max_epochs=3"]


@pytest.mark.parametrize("own", [
    ["optim.lr=0.0041", "model.width=16"],  # model.width reaches the layers through ${model.width}
    ["+model.blocks=3"],
    ["++trainer.max_epochs=4"],
    ["optim=sgd", "optim.lr=0.1"],  # a group choice: composed whole
    ["data.batch_size=8", "seed=3", "regularization.dropout=0.25"],
    [],
])
def test_a_trial_composed_from_the_base_equals_its_whole_composition(own):
    assert composer(BASE)(own) == compose(BASE + own)


def test_a_bad_trial_value_gets_the_whole_composition_message():
    with pytest.raises(ConfigError) as fast:
        composer(BASE)(["optim.nope=1"])
    with pytest.raises(ConfigError) as whole:
        compose(BASE + ["optim.nope=1"])
    assert str(fast.value) == str(whole.value) and "did you mean" in str(fast.value).lower()


@pytest.mark.parametrize("own", [["optim.lr=0.02"], ["trainer.enable_progress_bar=true", "optim.lr=0.02"]])
def test_trial_configs_record_what_a_quiet_whole_composition_records(own):
    run = TrialConfigs(BASE, None).run(own, "trial", quiet=True)
    whole = compose_run(["trainer.enable_progress_bar=false", *BASE, *own], None, "trial")
    assert (run.config, run.choices, run.overrides) == (whole.config, whole.choices, whole.overrides)


def _session(direction: str, values: list[float | None]):
    """A study whose trial i ended at values[i] (None: not complete, like a trial still running)."""
    import optuna

    study = optuna.create_study(direction=direction)
    for value in values:
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(value=value, state=state, params={}, distributions={}))
    return SimpleNamespace(study=study, direction=direction)


def test_only_the_trial_dlrun_names_best_takes_a_model():
    session = _session("maximize", [0.9, 0.8])
    assert _beats(session, 2, 0.95)  # better than every finished trial
    assert not _beats(session, 2, 0.9)  # equal to trial 0, which comes first and stays the best
    assert not _beats(session, 2, 0.85)
    assert _beats(_session("maximize", []), 0, 0.1)
    assert _beats(_session("minimize", [0.5]), 1, 0.4) and not _beats(_session("minimize", [0.5]), 1, 0.5)


def test_a_tie_from_a_trial_numbered_before_the_best_takes_a_model():
    # In a parallel study trial 1 may finish after trial 2 reached the same value: trial 1 is then the best.
    session = _session("maximize", [0.5, None, 0.9])
    assert _beats(session, 1, 0.9)
    assert not _beats(session, 3, 0.9)


def test_a_finished_trial_counts_in_the_progress_exactly_where_it_spends_the_budget():
    import optuna

    from dlrun.tuning import budget
    from dlrun.tuning.states import TrialState

    optuna_state = {TrialState.COMPLETE: optuna.trial.TrialState.COMPLETE,
                    TrialState.PRUNED: optuna.trial.TrialState.PRUNED}
    finished = [state for state in TrialState if state.is_finished()]
    for state in finished:
        trial = SimpleNamespace(state=optuna_state.get(state, optuna.trial.TrialState.FAIL),
                                user_attrs={"dlrun_state": state.value})
        assert state.spent_budget() == budget.counts(trial), state
    assert not TrialState.CRASHED.spent_budget() and not TrialState.INTERRUPTED.spent_budget()
