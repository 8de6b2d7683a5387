"""Packaging metadata that has to stay in step: one version, one set of URLs, PEP 639 license metadata."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

from edge_runtime import __version__

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "edgeml" / "fleet"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
GALAXY = yaml.safe_load((COLLECTION / "galaxy.yml").read_text(encoding="utf-8"))


def test_one_version_galaxy_follows_the_python_package() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project, "pyproject.toml must not carry its own version (edge_runtime/_version.py does)"
    assert project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "edge_runtime._version.__version__"}
    assert GALAXY["version"] == __version__, "set galaxy.yml's version to edge_runtime/_version.py's"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_version_added_never_runs_ahead_of_the_collection() -> None:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    for path in sorted((COLLECTION / "plugins").rglob("*")):
        if path.suffix in (".py", ".yml"):
            for added in re.findall(r"version_added:\s*['\"]?([\d.]+)", path.read_text(encoding="utf-8")):
                assert key(added) <= key(__version__), f"{path.name}: version_added {added} > {__version__}"


def test_pep639_license_metadata() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0", "an SPDX expression (PEP 639), not a table"
    assert project["license-files"] == ["LICENSE"]
    assert "License ::" not in " ".join(project.get("classifiers", [])), "PEP 639: no license classifiers"
    requires = PYPROJECT["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in requires), requires
    assert (REPO / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    assert GALAXY["license"] == ["Apache-2.0"]
    # two copies (ansible-test refuses a link that leaves the collection), held identical
    assert (COLLECTION / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()
    assert not (COLLECTION / "LICENSE").is_symlink()


def test_urls_agree_between_pyproject_and_galaxy() -> None:
    urls = PYPROJECT["project"]["urls"]
    assert GALAXY["repository"] == urls["Repository"]
    assert GALAXY["homepage"] == urls["Homepage"]
    assert GALAXY["issues"] == urls["Issues"]
    assert GALAXY["documentation"].startswith(urls["Repository"] + "/")
    for url in [*urls.values(), GALAXY["repository"], GALAXY["documentation"]]:
        assert url.startswith("https://"), url
        assert ".invalid" not in url, url
