"""dlrun.database: which URLs are server databases, passwords hidden, and a missing driver named with its extra.

Connecting to a real server is tests/cli/test_postgres.py's.
"""

from __future__ import annotations

import sys

import pytest

from dlrun.database import check_database, connect_failure, hide_passwords, is_database_url
from dlrun.errors import ConfigError


@pytest.mark.parametrize("text, hidden", [
    ("postgresql://ann:s3cret@db:5432/x", "postgresql://ann:***@db:5432/x"),
    ("dlrun sweep s.yaml --storage postgresql+psycopg://ann:p%40ss@db/x --n-jobs 2",
     "dlrun sweep s.yaml --storage postgresql+psycopg://ann:***@db/x --n-jobs 2"),
    ("a mysql://root:pw@h/d and postgresql://bob:other@h2/e", "a mysql://root:***@h/d and postgresql://bob:***@h2/e"),
    ("http://127.0.0.1:5000/api", "http://127.0.0.1:5000/api"),  # a port is not a password
    ("postgresql://ann@db/x", "postgresql://ann@db/x"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("optim.lr=0.1 user:pw@host", "optim.lr=0.1 user:pw@host"),  # no URL, nothing to hide
    ("postgresql://ann:pa/ss@db/x", "postgresql://ann:***@db/x"),  # SQLAlchemy reads pa/ss as the password
    ("postgresql://ann:p@ss@db:5432/x then http://h/", "postgresql://ann:***@db:5432/x then http://h/"),
])
def test_hide_passwords_replaces_only_a_urls_password(text, hidden):
    assert hide_passwords(text) == hidden


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:p@h/d", True), ("postgresql+psycopg2://h/d", True), ("mysql+pymysql://h/d", True),
    ("sqlite:///mlflow.db", False), ("http://127.0.0.1:5000", False), ("https://mlflow.example", False),
    ("optuna/study.journal", False), ("file:///tmp/mlruns", False), ("ftp://host/store", False),
])
def test_is_database_url(url, expected):
    assert is_database_url(url) is expected


def test_urls_that_are_not_server_databases_are_not_checked():
    for url in ("sqlite:///nowhere/x.db", "http://127.0.0.1:1", "optuna/x.journal"):
        check_database(url, "--storage")  # no connection tried, no error


def test_a_missing_psycopg_names_the_postgres_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError) as raised:
        check_database("postgresql://ann:s3cret@db.example:5432/x", "--storage")
    message = str(raised.value)
    assert "--storage postgresql://ann:***@db.example:5432/x" in message
    assert "driver 'psycopg' is not installed" in message and "pip install 'dlrun[postgres]'" in message
    assert "s3cret" not in message


def test_a_malformed_database_url_is_a_config_error_with_the_form_to_give():
    with pytest.raises(ConfigError, match="not a database URL SQLAlchemy knows.*postgresql://USER:PASSWORD@HOST"):
        check_database("postgresql://ann:s3cret@db:notaport/x", "--storage")


@pytest.mark.parametrize("driver_said, reason", [
    ('connection to server at "h", port 5432 failed: FATAL:  password authentication failed for user "ann"',
     "it refused the password of user 'ann'"),
    ("connection timeout expired", "no answer within 5 s"),
    ('connection to server at "h", port 1 failed: Connection refused', "connection refused"),
    ('connection to server at "h", port 5432 failed: FATAL:  database "x" does not exist', "it has no database 'x'"),
    ('FATAL:  role "ann" does not exist', "it has no user 'ann'"),
    ("failed to resolve host 'nohost': [Errno -2] Name or service not known", "the host name does not resolve"),
])
def test_connect_failures_say_what_to_fix(driver_said, reason):
    assert connect_failure(driver_said, "ann", "x").startswith(reason)


def test_the_closing_summary_hides_the_stores_password(capsys):
    from types import SimpleNamespace

    from dlrun.summary import print_summary

    print_summary(SimpleNamespace(choices={}, epochs=1, history=[], test_metrics={}, world_size=1,
                                  tracking_uri="postgresql://ann:s3cret@db/x", run_name="r", model_uri=None,
                                  checkpoint_dir="c", run_id="0" * 32, record_note=None))
    printed = capsys.readouterr().out
    assert "postgresql://ann:***@db/x" in printed and "s3cret" not in printed
