"""The image's lock (requirements/constraints.txt) and its tool, .ci/lock.py, offline.

`make validate` runs `.ci/lock.py --check`, which asks pip's resolver and so
the package index. These tests need no index: they read pyproject.toml and the
lock as files, and walk the tool's pure parts (parsing, rendering, drift) with
planted mistakes.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "constraints.txt"
# The image does everything the docs describe, the lake stage included.
IMAGE_EXTRAS = ("lake",)


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_lock", ROOT / ".ci" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, Version]:
    """The lock's pins, read here without the tool: {canonical name: version}."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line).groups()
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _image_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in IMAGE_EXTRAS:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


def _gated_by(dist: str, extra: str) -> list[Requirement]:
    """What `dist[extra]` adds to `dist` (from the installed distribution's metadata)."""
    added = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker and req.marker.evaluate({"extra": extra}):
            if not req.marker.evaluate({"extra": ""}):
                added.append(req)
    return added


def test_the_lock_pins_the_package_and_its_lake_extra() -> None:
    pins = _pins()
    requirements = _image_requirements()
    assert {"pyiceberg", "pyarrow", "sqlalchemy"} <= {
        canonicalize_name(r.name) for r in requirements
    }
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in the lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}: {req}"
        for extra in req.extras:  # psycopg[binary], pyiceberg[pyarrow]
            for dep in _gated_by(req.name, extra):
                assert canonicalize_name(dep.name) in pins, f"{req.name}[{extra}] needs {dep}"


def test_the_tool_locks_the_image_extras_and_wrote_this_lock() -> None:
    tool = _tool()
    assert tool.EXTRAS == IMAGE_EXTRAS
    assert tool.target().endswith("[lake]")
    text = LOCK.read_text()
    assert text.startswith("# Exact runtime dependencies of login-etl[lake],")
    # The committed file is exactly what `make constraints` writes: no hand edits.
    py = re.search(r"on Python (\d+\.\d+);", text).group(1)
    pins = tool.parse_lock(text)
    assert tool.render(pins, py) == text
    # Sorted by the tool, not carried over from the file's order.
    assert tool.render(dict(reversed(pins.items())), py) == text


def test_drift_names_every_unpinned_and_stale_pin() -> None:
    tool = _tool()
    locked = tool.parse_lock("boto3==1.44.8\nPyYAML==6.0\n")
    assert locked["pyyaml"] == ("PyYAML", "6.0")
    resolved = {"boto3": ("boto3", "1.44.8"), "pyiceberg": ("pyiceberg", "0.12.0")}
    assert tool.drift(locked, resolved) == ["unpinned: pyiceberg==0.12.0", "stale pin: PyYAML==6.0"]
    assert tool.drift(locked, {"boto3": ("boto3", "1.44.8"), "pyyaml": ("PyYAML", "6.0")}) == []


def test_a_lock_without_the_lake_is_drift() -> None:
    """What `--check` reports for the lock of a lake-less image: every lake package unpinned."""
    tool = _tool()
    resolved = tool.parse_lock(LOCK.read_text())
    lake = {"pyiceberg", "pyarrow", "sqlalchemy"}
    without = {k: v for k, v in resolved.items() if k not in lake}
    problems = tool.drift(without, resolved)
    assert sorted(problems) == sorted(
        f"unpinned: {n}=={v}" for k, (n, v) in resolved.items() if k in lake
    )


@pytest.mark.parametrize("line", ["boto3>=1.34", "boto3", "boto3=="])
def test_a_loose_pin_is_refused(line: str) -> None:
    with pytest.raises(SystemExit, match="not an exact pin"):
        _tool().parse_lock(f"click==8.5.1\n{line}\n")
