"""A throwaway PostgreSQL cluster: `initdb` and `pg_ctl` from Debian's PostgreSQL packages, in a
directory of its own (a temporary one unless given), on a free port on 127.0.0.1, never a server
that happens to run on the machine. The tests start one per test process and give each test a
database of its own (`PostgresCluster.new_database`); `jigd demo --stations N` without `--store`
starts one in its work directory; the site benchmark (bench/site.py) uses one too.

PostgreSQL refuses to run as root; as root (CI's containers) the cluster runs as the `postgres`
system user the Debian packages create (its directory's parents must let that user through).
Unless `durable`, the cluster trades crash safety for speed (`fsync=off`, `full_page_writes=off`):
it holds nothing a test or a demo must find again after the machine dies, and whoever stops the
server stops it with `pg_ctl stop`, which writes everything first.
`stop()` and `start()` stop and start the same server again (same data directory, same port).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["PostgresCluster", "free_port", "postgres_bindir"]

START_TIMEOUT_S: Final = 60
SUPERUSER: Final = "jigd_test"
BINDIR_GLOB: Final = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH, one directory per version."""
    found = sorted(
        (p for p in Path("/").glob(BINDIR_GLOB.lstrip("/")) if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    raise RuntimeError(
        "initdb is missing: the tests need a real PostgreSQL. Install it with "
        "`apt-get install postgresql` (the README's test command does this)."
    )


def _as_owner() -> list[str]:
    """The prefix that runs a server command as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresCluster:
    """A PostgreSQL server we own; `start()`, `url(database)`, `stop()`, `remove()`."""

    port: int = field(default_factory=free_port)
    durable: bool = False  # fsync as a production server does (benchmarks); tests trade it away
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jigd-pg-")))
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*_as_owner(), *args], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            log = self.log_path.read_text("utf-8")[-4000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr}{done.stdout}{log}")

    def init(self) -> None:
        """Create the cluster's files (once)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        bindir = postgres_bindir()
        self._run(
            str(bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server (initialising the cluster first if needed, else on the data it
        holds, on the same port); wait until it answers."""
        if not self.data.exists():
            self.init()
        speed = () if self.durable else ("-c fsync=off", "-c full_page_writes=off")
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.directory}",
                "-c max_connections=200",
                *speed,
            )
        )
        self._run(
            str(postgres_bindir() / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log_path),
            "--options",
            options,
            "--wait",
            "--timeout",
            str(START_TIMEOUT_S),
            "start",
        )

    @property
    def running(self) -> bool:
        """The server's pid file is there (pg_ctl removes it when the server stops)."""
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        """Stop the server (`pg_ctl stop -m fast`: sessions are ended, everything written
        first); `start()` starts it again on the same data directory and port."""
        if self.running:
            self._run(
                str(postgres_bindir() / "pg_ctl"), "--pgdata", str(self.data), "-m", "fast", "stop"
            )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def new_database(self, owner: str | None = None) -> str:
        """A new, empty database (owned by the role `owner`, or the superuser); its URL."""
        name = f"t{os.getpid()}_{next(self._numbers)}"
        self.sql(f'CREATE DATABASE "{name}"' + (f" OWNER {owner}" if owner else ""))
        return self.url(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql as the superuser; what it printed."""
        done = subprocess.run(
            [
                str(postgres_bindir() / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set",
                "ON_ERROR_STOP=1",
                "--command",
                statement,
                self.url(database),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {done.stderr}")
        return done.stdout
