"""Property: any override string or YAML value given to `dlrun train --cfg` ends in exit 0 or 2,
never a traceback (hypothesis draws them)."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()
KEYS = ["model", "optim", "optim.lr", "data.batch_size", "trainer.max_epochs", "model.width", "activation",
        "regularization.dropout", "seed", "loss", "data", "model.layers.0.type", "+model.blocks", "~optim",
        "trainer.early_stopping.patience", "tracking.uri"]
VALUES = st.one_of(
    st.text(alphabet=string.printable, max_size=20),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "true", "[1,2]", "{a: 1}", "${optim.lr}", "${oc.env:HOME}", "${missing.key}",
                     "choice(a,b)", "'quoted'", "adam", "cnn", "-1", "1e309", "'", "\"", "="]),
)


def assert_clean(result) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(KEYS), st.text(alphabet=string.ascii_letters + "._+~", min_size=1, max_size=12)),
       value=VALUES)
def test_any_override_is_exit_0_or_2(key, value):
    assert_clean(runner.invoke(app, ["train", "--cfg", f"{key}={value}"]))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(text=st.text(alphabet=string.printable, max_size=40))
def test_any_text_as_an_override_is_exit_0_or_2(text):
    assert_clean(runner.invoke(app, ["train", "--cfg", text]))
