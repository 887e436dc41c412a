"""Where the local services find PostgreSQL's server binaries, and the shared copy
of PyPI's pgserver that an unprivileged user can run. Fake trees, no server."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from login_etl.dev import pgbin
from login_etl.dev.pgbin import find_pg_bindir, shared_pgserver_copy
from login_etl.errors import LocalServiceError

REAL_FIND_SPEC = importlib.util.find_spec


def server_dir(path: Path) -> Path:
    """A folder holding (fake) initdb and pg_ctl."""
    path.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl"):
        (path / tool).write_text("#!/bin/sh\n")
        (path / tool).chmod(0o755)
    return path


def pgserver_tree(site: Path) -> Path:
    """The pgserver wheel's layout under `site`; its bin directory."""
    (site / "pgserver").mkdir(parents=True)
    (site / "pgserver" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    bindir = server_dir(site / "pgserver" / "pginstall" / "bin")
    share = site / "pgserver" / "pginstall" / "share"
    share.mkdir()
    (share / "postgres.bki").write_text("bki\n")
    (share / "postgres.bki").chmod(0o600)  # as a umask of 077 would leave it
    (site / "pgserver" / "pginstall" / "include").mkdir()
    (site / "pgserver" / "pginstall" / "include" / "libpq-fe.h").write_text("\n")
    libs = site / "pgserver.libs"
    libs.mkdir()
    (libs / "libpq-abc.so.5.16").write_text("lib\n")
    (libs / "libpq.so").symlink_to("libpq-abc.so.5.16")
    return bindir


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with no PostgreSQL: no pg_config on PATH, no Debian folders, no pgserver."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("LOGIN_ETL_PG_BINDIR", raising=False)
    monkeypatch.setattr(pgbin, "_DEBIAN_BINDIRS", str(tmp_path / "debian" / "*" / "bin"))
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "pgserver" else REAL_FIND_SPEC(name, package),
    )
    return tmp_path


def with_pgserver(machine: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a fake pgserver on sys.path (undoing the fixture's "none installed")."""
    bindir = pgserver_tree(machine / "site")
    monkeypatch.setattr(importlib.util, "find_spec", REAL_FIND_SPEC)
    monkeypatch.syspath_prepend(str(machine / "site"))  # ahead of any real pgserver
    return bindir


def with_pg_config(machine: Path, monkeypatch: pytest.MonkeyPatch, bindir: Path) -> None:
    """A pg_config on PATH that answers `--bindir` with `bindir`."""
    script = machine / "empty-path" / "pg_config"
    script.write_text(f"#!/bin/sh\necho {bindir}\n")
    script.chmod(0o755)


def test_nothing_found_names_every_way_out(machine: Path) -> None:
    with pytest.raises(LocalServiceError) as err:
        find_pg_bindir()
    message = str(err.value)
    assert "no PostgreSQL server binaries found" in message
    assert "'.[pg]'" in message and "LOGIN_ETL_PG_BINDIR" in message


def test_newest_debian_major_wins_by_number(machine: Path) -> None:
    for major in ("9.6", "15", "16"):
        server_dir(machine / "debian" / major / "bin")
    assert find_pg_bindir() == machine / "debian" / "16" / "bin"


def test_debian_folder_without_server_is_passed_over(machine: Path) -> None:
    (machine / "debian" / "17" / "bin").mkdir(parents=True)  # client package only
    server_dir(machine / "debian" / "15" / "bin")
    assert find_pg_bindir() == machine / "debian" / "15" / "bin"


def test_pg_config_comes_before_debian(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server_dir(machine / "debian" / "16" / "bin")
    other = server_dir(machine / "opt" / "pg" / "bin")
    with_pg_config(machine, monkeypatch, other)
    assert find_pg_bindir() == other


def test_pg_config_without_server_falls_through(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq-dev's pg_config answers /usr/bin, which holds no initdb.
    with_pg_config(machine, monkeypatch, machine / "empty-path")
    server_dir(machine / "debian" / "15" / "bin")
    assert find_pg_bindir() == machine / "debian" / "15" / "bin"


def test_explicit_variable_comes_first(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server_dir(machine / "debian" / "16" / "bin")
    with_pg_config(machine, monkeypatch, server_dir(machine / "opt" / "pg" / "bin"))
    mine = server_dir(machine / "mine" / "bin")
    monkeypatch.setenv("LOGIN_ETL_PG_BINDIR", str(mine))
    assert find_pg_bindir() == mine


def test_explicit_variable_without_server_is_an_error(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_dir(machine / "debian" / "16" / "bin")
    monkeypatch.setenv("LOGIN_ETL_PG_BINDIR", str(machine / "nowhere"))
    with pytest.raises(LocalServiceError, match="LOGIN_ETL_PG_BINDIR=.*nowhere"):
        find_pg_bindir()


def test_pgserver_is_the_last_resort(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = with_pgserver(machine, monkeypatch)
    assert find_pg_bindir() == shipped  # found without importing the package
    debian = server_dir(machine / "debian" / "15" / "bin")
    assert find_pg_bindir() == debian


def test_copy_keeps_the_wheel_layout_open_to_all(machine: Path) -> None:
    bindir = pgserver_tree(machine / "site")
    cache = machine / "cache" / "login-etl-pgserver-1.0"
    cache.parent.mkdir()

    copied = shared_pgserver_copy(bindir, cache)

    assert copied == cache / "pgserver" / "pginstall" / "bin"
    # initdb's RPATH is $ORIGIN/../../../pgserver.libs: the libraries sit there.
    libs = (copied / ".." / ".." / ".." / "pgserver.libs").resolve()
    assert (libs / "libpq-abc.so.5.16").read_text() == "lib\n"
    assert os.readlink(libs / "libpq.so") == "libpq-abc.so.5.16"
    share = copied.parent / "share"
    assert (share / "postgres.bki").read_text() == "bki\n"
    assert stat.S_IMODE((share / "postgres.bki").stat().st_mode) == 0o644
    assert stat.S_IMODE((copied / "initdb").stat().st_mode) == 0o755
    for folder in (cache, copied, share, libs):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert not (copied.parent / "include").exists()
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]  # no staging left


def test_copy_is_made_once_and_reused(machine: Path) -> None:
    bindir = pgserver_tree(machine / "site")
    cache = machine / "login-etl-pgserver-1.0"
    first = shared_pgserver_copy(bindir, cache)
    (first / "marker").write_text("kept\n")
    (bindir / "initdb").write_text("#!/bin/sh\nexit 1\n")

    assert shared_pgserver_copy(bindir, cache) == first
    assert (first / "marker").read_text() == "kept\n"
    assert (first / "initdb").read_text() == "#!/bin/sh\n"


def test_copy_writable_by_others_is_refused(machine: Path) -> None:
    bindir = pgserver_tree(machine / "site")
    cache = machine / "login-etl-pgserver-1.0"
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(LocalServiceError, match="refusing"):
        shared_pgserver_copy(bindir, cache)


def test_copy_that_is_a_symlink_is_refused(machine: Path) -> None:
    bindir = pgserver_tree(machine / "site")
    elsewhere = machine / "elsewhere"
    elsewhere.mkdir()
    cache = machine / "login-etl-pgserver-1.0"
    cache.symlink_to(elsewhere)
    with pytest.raises(LocalServiceError, match="refusing"):
        shared_pgserver_copy(bindir, cache)
