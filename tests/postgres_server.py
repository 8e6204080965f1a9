"""A PostgreSQL server for the database tests.

``GPURISK_TEST_POSTGRES`` (a ``postgresql://`` URI; .ci/run sets it after starting Debian's
cluster) names a server to use. Without it, a throwaway cluster is made with ``initdb`` and
``pg_ctl`` in a temporary folder, listening only on a Unix socket there; as root it runs as
the ``postgres`` user (the server refuses to run as root). No server and no PostgreSQL to
start one is a test failure, never a skip: these tests are the only check of the database
path.
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

ENV = "GPURISK_TEST_POSTGRES"
HOW = (f"set {ENV}=postgresql://USER@HOST/DB to a server the tests may create schemas in, or install "
       f"PostgreSQL's server (Debian: apt-get install postgresql) so they can start a throwaway one")


class NoServer(RuntimeError):
    pass


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    raise NoServer(f"no PostgreSQL server to test against: {ENV} is not set and initdb is not installed; {HOW}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayServer:
    """initdb + pg_ctl in a temporary folder; ``uri`` connects over its Unix socket."""

    def __init__(self):
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="gpurisk-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise NoServer(f"running as root and there is no 'postgres' user to run a throwaway server as; "
                               f"{HOW}") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        data = self.root / "data"
        self._pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-k {self.root} -p {self.port} -c listen_addresses='' -c fsync=off"
        self._pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        self.uri = f"postgresql:///postgres?host={self.root}&port={self.port}&user=postgres"

    def _pg(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, str(self.bindir / tool), *args], capture_output=True, text=True,
                              cwd=self.root)
        if done.returncode:
            log = self.root / "log"
            raise NoServer(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                           + (f"\n{log.read_text()[-2000:]}" if log.exists() else ""))

    def stop(self) -> None:
        try:
            self._pg("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def with_options(uri: str, **params: str) -> str:
    """The URI with extra libpq parameters (e.g. options=-csearch_path=...)."""
    from urllib.parse import quote

    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"{uri}{'&' if '?' in uri else '?'}{extra}"
