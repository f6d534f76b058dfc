"""Database URLs (a sweep's --storage, an MLflow store such as postgresql://): checked before use, and kept secret.

Neither Optuna nor MLflow bounds how long a connection may take: a PostgreSQL host that does not
answer hangs a command for minutes, or for ever, and a refused password surfaces as a traceback.
So a database URL is tried once, with a short timeout, before anything uses it; the error names
the host and the user, never the password. A URL's password is hidden from every message and
from everything a run records (hide_passwords).
"""

from __future__ import annotations

import re

from dlrun.errors import ConfigError

CONNECT_TIMEOUT_S = 5
# Server databases whose drivers take connect_timeout (seconds); SQLite is a local file.
TIMEOUT_BACKENDS = ("postgresql", "mysql", "mariadb")
# The drivers dlrun's extras install, and the extra that installs each.
EXTRAS = {"psycopg": "postgres"}

# The password runs to the last '@' before the host; it may hold '/' (SQLAlchemy reads it so).
_PASSWORD_IN_URL = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*):[^\s]*@(?=[^\s@/]*(?:[/:?#]|\s|$))")


def hide_passwords(text: str) -> str:
    """text with the password of every URL in it replaced by ***: `postgresql://ann:***@db:5432/x`."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", text)


# The server databases that MLflow and Optuna open through SQLAlchemy; any other scheme (ftp://) is not one,
# and is left to the store's own message.
DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")


def is_database_url(url: str) -> bool:
    """True for a server database's SQLAlchemy URL (postgresql://, mysql+pymysql://, ...), not SQLite or HTTP."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    return scheme in DATABASE_SCHEMES


def engine_options(url: str) -> dict:
    """SQLAlchemy create_engine options that bound each connection attempt to CONNECT_TIMEOUT_S."""
    backend = url.split("://", 1)[0].split("+", 1)[0].lower()
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if backend in TIMEOUT_BACKENDS else {}


def check_database(url: str, what: str) -> None:
    """Connect to the database at url once, giving up after CONNECT_TIMEOUT_S.

    Args:
        url: a SQLAlchemy URL; anything that is_database_url rejects is left alone.
        what: where the URL came from, to start the message (`--storage`, `the MLflow store`).

    Raises:
        ConfigError: the URL is malformed, its driver is not installed, or the server does not answer,
            refuses the user or has no such database. The message names host, port and user, never
            the password.
    """
    if not is_database_url(url):
        return
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    shown = hide_passwords(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (exc.ArgumentError, exc.NoSuchModuleError, ValueError) as error:
        raise ConfigError(f"{what} {shown}: not a database URL SQLAlchemy knows ({_first_line(error)}). "
                          "Give dialect[+driver]://USER:PASSWORD@HOST:PORT/DATABASE, for example "
                          "postgresql://USER:PASSWORD@HOST:5432/DATABASE.") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        raise ConfigError(f"{what} {shown}: {missing_driver(dialect.driver, parsed.get_backend_name())}") from None
    where = f"{parsed.host or 'localhost'}" + (f":{parsed.port}" if parsed.port else "")
    engine = create_engine(url, poolclass=NullPool, **engine_options(url))
    try:
        with engine.connect():
            pass
    except exc.DBAPIError as error:
        reason = connect_failure(str(error.orig), parsed.username, parsed.database)
        raise ConfigError(f"{what} {shown}: cannot connect to the database server at {where}: {reason} "
                          "Nothing was started or recorded.") from None
    finally:
        engine.dispose()


def missing_driver(driver: str, backend: str) -> str:
    """What to install for a database URL whose driver module is missing."""
    extra = EXTRAS.get(driver)
    if extra:
        return f"its {backend} driver '{driver}' is not installed. Install it: pip install 'dlrun[{extra}]'."
    return f"its {backend} driver '{driver}' is not installed. Install the package that provides it."


def connect_failure(message: str, user: str | None, database: str | None) -> str:
    """A driver's connection error as one sentence and its fix, naming the user (the password is never in it)."""
    text = " ".join(hide_passwords(message).split())
    if "password authentication failed" in text or "Access denied for user" in text:
        return (f"it refused the password of user '{user}'. Check the password in the URL "
                "(or the server's pg_hba.conf).")
    if "timeout expired" in text or "timed out" in text:
        return f"no answer within {CONNECT_TIMEOUT_S} s. Check the host and port, and that the server runs."
    if "Connection refused" in text:
        return "connection refused (nothing listens there). Start the server, or fix the host and port."
    if "does not exist" in text and database and f'"{database}"' in text:
        return f"it has no database '{database}'. Create it (createdb {database}) or name another."
    if "role" in text and "does not exist" in text:
        return f"it has no user '{user}'. Create it (createuser {user}) or name another."
    if "resolve host" in text or "Name or service not known" in text:
        return "the host name does not resolve. Fix the host in the URL."
    return text[:300].rstrip(".") + "."


def _first_line(error: BaseException) -> str:
    return hide_passwords(str(error).splitlines()[0] if str(error) else type(error).__name__)
