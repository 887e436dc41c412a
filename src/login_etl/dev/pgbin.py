"""PostgreSQL's server binaries for the local services: where they are, and a
copy that an unprivileged user can run.

They come from the machine (``$LOGIN_ETL_PG_BINDIR``, ``pg_config``,
Debian's ``/usr/lib/postgresql``) or, on a machine without PostgreSQL, from
the ``pgserver`` wheel that ``make install`` then adds to the virtualenv (the
``[pg]`` extra). ``python -m login_etl.dev.pgbin`` says which, or exits 1.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from login_etl.errors import LocalServiceError

# Debian's server packages, one folder per major version.
_DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"


def _has_server(bindir: Path) -> bool:
    return (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()


def _major(bindir: str) -> tuple[int, ...]:
    """(16,) for /usr/lib/postgresql/16/bin, (9, 6) for 9.6: numbers, so 16 sorts above 9.6."""
    return tuple(int(n) for n in re.findall(r"\d+", Path(bindir).parent.name))


def _pgserver_bindir() -> Path | None:
    """initdb/pg_ctl inside the installed `pgserver` wheel, found without importing it."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _has_server(bindir) else None


def find_pg_bindir() -> Path:
    """Where initdb/pg_ctl live: $LOGIN_ETL_PG_BINDIR, pg_config, Debian's, or PyPI's pgserver."""
    explicit = os.environ.get("LOGIN_ETL_PG_BINDIR")
    if explicit:
        if not _has_server(Path(explicit)):
            raise LocalServiceError(f"LOGIN_ETL_PG_BINDIR={explicit} has no initdb and pg_ctl")
        return Path(explicit)
    candidates: list[str] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob(_DEBIAN_BINDIRS), key=_major, reverse=True)
    for c in candidates:
        if c and _has_server(Path(c)):
            return Path(c)
    shipped = _pgserver_bindir()
    if shipped is not None:
        return shipped
    raise LocalServiceError(
        "no PostgreSQL server binaries found: add PyPI's to the virtualenv with "
        "pip install -e '.[pg]' (make does when it creates .venv), install the system's "
        "postgresql package, or set LOGIN_ETL_PG_BINDIR"
    )


def _runs_as(bindir: Path, run_as: dict[str, Any]) -> bool:
    """Whether the user in `run_as` can run initdb from `bindir` (path, modes and libraries)."""
    try:
        done = subprocess.run(
            [str(bindir / "initdb"), "--version"],
            capture_output=True,
            timeout=30,
            cwd="/",
            **run_as,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _open_to_all(root: Path) -> None:
    """Modes 755/644 below `root`, whatever the umask the copied files were made under."""
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)


def shared_pgserver_copy(bindir: Path, cache: Path) -> Path:
    """A copy of pgserver's binaries at `cache`, made once and reused; its bin directory.

    The binaries find lib/ and share/ relative to themselves, and initdb finds
    libpq through ``$ORIGIN/../../../pgserver.libs``, so the copy keeps the
    wheel's layout. It is built aside and renamed into place, so a concurrent
    maker never sees half a copy; one not owned by us, or writable by others,
    is refused rather than run.
    """
    pginstall = bindir.parent
    libs = pginstall.parent.parent / "pgserver.libs"
    if not cache.exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        try:
            shutil.copytree(
                pginstall,
                staging / "pgserver" / "pginstall",
                symlinks=True,
                ignore=shutil.ignore_patterns("include"),
            )
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
            _open_to_all(staging)
            try:
                staging.rename(cache)
            except OSError:
                if not cache.is_dir():  # not merely beaten to it by another process
                    raise
        except OSError as exc:
            raise LocalServiceError(f"cannot copy PostgreSQL's binaries to {cache}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    st = cache.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise LocalServiceError(f"refusing {cache}: not a folder of ours closed to others' writes")
    return cache / "pgserver" / "pginstall" / "bin"


def runnable_bindir(bindir: Path, run_as: dict[str, Any]) -> Path:
    """`bindir`, or a shared copy of pgserver's, that the user in `run_as` can run.

    As root the server runs as ``nobody``, who cannot enter a virtualenv under
    a private home (mode 700); pgserver's binaries then run from a copy in the
    temp directory, made once per pgserver version.
    """
    if _runs_as(bindir, run_as):
        return bindir
    if bindir == _pgserver_bindir():
        version = importlib.metadata.version("pgserver")
        cache = Path(tempfile.gettempdir()) / f"login-etl-pgserver-{version}"
        copy = shared_pgserver_copy(bindir, cache)
        if _runs_as(copy, run_as):
            return copy
        bindir = copy
    raise LocalServiceError(
        f"PostgreSQL runs as nobody, who cannot run {bindir / 'initdb'}: "
        "make its folders readable by all, or set LOGIN_ETL_PG_BINDIR"
    )


if __name__ == "__main__":
    # `make install` asks this before fetching PyPI's PostgreSQL (the [pg] extra).
    try:
        print(f"PostgreSQL server binaries: {find_pg_bindir()}")
    except LocalServiceError as exc:
        sys.exit(str(exc))
