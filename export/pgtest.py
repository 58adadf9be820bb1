"""A throwaway PostgreSQL server for tests and benchmarks, from the `pgserver` wheel (dev extra).

`pgserver.get_server()` always listens on a Unix socket only (it starts postgres with
`-h ""`), so this helper drives pgserver's bundled `initdb` / `pg_ctl` itself, the way
get_server does, but listening on loopback TCP: `-h 127.0.0.1 -p <free port>`, no socket.
As get_server does, when run as root it runs the server as the system user `pgserver`
(created if missing) and adds read/execute permission to every parent folder of the data
directory: keep that directory under a temporary folder.

    with throwaway_postgres(tmp_dir) as url:      # postgresql://postgres@127.0.0.1:PORT/postgres
        ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresUnavailable", "throwaway_postgres", "start_postgres"]


class PostgresUnavailable(RuntimeError):
    """No server could start here (pgserver missing, or initdb / pg_ctl failed)."""


class _Server:
    def __init__(self, pgdata: Path, user: str | None, port: int):
        self.pgdata, self.user, self.port = pgdata, user, port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        from pgserver import pg_ctl

        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user, timeout=60)


def start_postgres(base: str | os.PathLike, *, settings: dict[str, str] | None = None) -> _Server:
    """initdb a cluster in `<base>/pgdata` and start it on 127.0.0.1; `.url`, `.stop()`."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver.utils import (
                ensure_prefix_permissions,
                ensure_user_exists,
                find_suitable_port,
            )
    except ImportError as err:
        raise PostgresUnavailable(f"pgserver is not installed ({err})") from err
    pgdata = Path(base).resolve() / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=False)
    user = None
    try:
        if os.geteuid() == 0:  # postgres refuses to run as root
            import pwd

            user = "pgserver"
            ensure_user_exists(user)
            ensure_prefix_permissions(pgdata)
            entry = pwd.getpwnam(user)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        pgserver.initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=user
        )
        options = " ".join(f"-c {k}={v}" for k, v in (settings or {}).items())
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between the probe and the start
            port = find_suitable_port("127.0.0.1")
            args = ["-w", "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k '' {options}".strip()]
            try:
                pgserver.pg_ctl(
                    [*args, "-l", str(pgdata / "log"), "start"],
                    pgdata=pgdata,
                    user=user,
                    timeout=90,
                )
                return _Server(pgdata, user, port)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
                last = err
        log = (pgdata / "log").read_text()[-2000:] if (pgdata / "log").exists() else ""
        raise PostgresUnavailable(f"pg_ctl start failed: {last}\n{log}")
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise PostgresUnavailable(f"cannot start PostgreSQL in {pgdata}: {err}") from err


@contextlib.contextmanager
def throwaway_postgres(
    base: str | os.PathLike, *, settings: dict[str, str] | None = None
) -> Iterator[str]:
    """Yield the URL of a fresh server under `base`; stop it and delete its data afterwards."""
    server = start_postgres(base, settings=settings)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(server.pgdata, ignore_errors=True)
