"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, pg_ctl on a loopback port.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user in a folder under
/tmp that it owns (pytest's tmp_path is root-only). Nothing outside its folder is touched; stop() and
start() keep the data, so a test can take the server away in the middle of a sweep and bring it back.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "dlrun"
PASSWORD = "pg-secret-7f3a"  # a value no message may ever show
START_TIMEOUT_S = 60


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be started here; the message says why."""


def server_binaries() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                                  "/usr/lib/postgresql/*/bin; install Debian's `postgresql` package")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster with a password-protected superuser (USER, PASSWORD) on 127.0.0.1."""

    def __init__(self) -> None:
        self.bin = server_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="dlrun-postgres-", dir="/tmp"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self._owner = self._server_user()
        if self._owner is not None:
            os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._owner is not None:
            os.chown(password_file, self._owner.pw_uid, self._owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(password_file),
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
        password_file.unlink()
        self.start()

    @staticmethod
    def _server_user():
        """None when not root; else the `postgres` account, which must exist (initdb refuses root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no `postgres` user to run the server "
                                      "as; install Debian's `postgresql` package") from None

    def _run(self, program: str, *args: str) -> None:
        owner = self._owner
        try:
            done = subprocess.run([str(self.bin / program), *args], capture_output=True, text=True,
                                  timeout=START_TIMEOUT_S, cwd=self.folder,
                                  user=owner.pw_uid if owner else None, group=owner.pw_gid if owner else None,
                                  env={**os.environ, "LC_ALL": "C"})
        except (OSError, subprocess.SubprocessError) as error:
            raise PostgresUnavailable(f"{program} could not run: {error}") from None
        if done.returncode != 0:
            log = self.log.read_text()[-1500:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{program} {' '.join(args)} failed: {(done.stdout + done.stderr)[-1500:]}"
                                      f"{log}")

    def start(self) -> None:
        """Start the server (again) on its port and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(START_TIMEOUT_S), "start")

    def stop(self) -> None:
        """Stop at once, as a crash or a lost network would: open connections are cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the server and remove its folder."""
        if self.is_running():
            try:
                self.stop()
            except PostgresUnavailable:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
