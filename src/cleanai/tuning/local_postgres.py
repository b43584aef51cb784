"""A private PostgreSQL server on this machine, to try a shared study before pointing workers at a real one.

    from cleanai.tuning import local_postgres
    with local_postgres() as url:   # postgresql://tuner:<password>@127.0.0.1:<port>/postgres
        ...                         # start `cleanai tune ... --storage URL --study NAME` workers against it

It runs the installed PostgreSQL binaries (Debian/Ubuntu: `apt-get install postgresql`) on 127.0.0.1 only, at a
free port, with password authentication and its data in a temporary folder (fsync off: nothing is kept); the
server is stopped and the folder removed on exit. As root it runs as the `postgres` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from cleanai.tuning.config import TuningError

_DEBIAN_BINARIES = Path("/usr/lib/postgresql")  # one <major version>/bin folder per installed server
_START_TIMEOUT = 120  # seconds pg_ctl waits for the server to accept connections


def postgres_bindir() -> Path | None:
    """The folder of the newest installed PostgreSQL server's `initdb` and `pg_ctl`, or None when none is installed."""
    found = sorted(_DEBIAN_BINARIES.glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl", path=str(Path(on_path).parent)) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_postgres(user: str = "tuner", password: str | None = None, bindir: Path | None = None) -> Iterator[str]:
    """Start a throw-away PostgreSQL server on 127.0.0.1 and yield its URL (`password`: random when None);
    stop it and delete its data on exit. Raises `TuningError` when PostgreSQL is not installed or does not start."""
    bindir = bindir or postgres_bindir()
    if bindir is None or not (bindir / "initdb").is_file():
        where = bindir or f"{_DEBIAN_BINARIES}/*/bin or on PATH"
        raise TuningError(f"PostgreSQL is not installed: no initdb in {where}; install the server (Debian/Ubuntu: "
                          f"apt-get install postgresql) or pass bindir=")
    password = password or secrets.token_urlsafe(12)
    base = Path(tempfile.mkdtemp(prefix="cleanai-pg-"))
    as_user: list[str] = []
    (base / "pw").write_text(password + "\n", encoding="utf-8")
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            for path in (base, base / "pw"):
                shutil.chown(path, "postgres", "postgres")
        except LookupError:
            shutil.rmtree(base, ignore_errors=True)
            raise TuningError("PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
                              "run as another user or create one (the Debian package does)") from None
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), base / "data"

    def run(*cmd: object) -> None:
        done = subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = base / "server.log"
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:] if log.exists() else []
            why = " | ".join([*(done.stderr.strip().splitlines()[-3:] or [f"exit code {done.returncode}"]), *tail])
            raise TuningError(f"the local PostgreSQL server did not start ({Path(str(cmd[0])).name}): {why}")

    try:
        run(bindir / "initdb", "-D", data, "-U", user, f"--pwfile={base / 'pw'}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", base / "server.log", "-w", "-t", _START_TIMEOUT, "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off", "start")
        yield f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
