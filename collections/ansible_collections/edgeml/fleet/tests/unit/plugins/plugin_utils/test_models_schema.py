# Copyright (c) edgeml maintainers
# SPDX-License-Identifier: Apache-2.0
"""The models.yaml schema ships inside the collection and is found from an installed copy (ansible-test units)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.edgeml.fleet.plugins.plugin_utils import models_schema

COLLECTION = Path(models_schema.__file__).resolve().parents[2]


def test_the_schema_is_part_of_the_collection(tmp_path, monkeypatch):
    monkeypatch.delenv(models_schema.SCHEMA_ENV, raising=False)
    # a models.yaml in a directory with no schemas/ of its own: the collection's copy is used
    found = models_schema.find_schema(str(tmp_path / "models.yaml"))
    assert found == COLLECTION / "schemas" / models_schema.SCHEMA_FILENAME
    schema = json.loads(found.read_text(encoding="utf-8"))
    assert schema["$schema"].endswith("2020-12/schema")
    assert "semver" in schema["$defs"]


def test_the_environment_overrides_and_must_name_a_file(tmp_path, monkeypatch):
    own = tmp_path / "mine.json"
    own.write_text("{}", encoding="utf-8")
    monkeypatch.setenv(models_schema.SCHEMA_ENV, str(own))
    assert models_schema.find_schema(None) == own
    monkeypatch.setenv(models_schema.SCHEMA_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError):
        models_schema.find_schema(None)
