"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.factory import Release, make_release
from tests.support.http_server import BundleServer


@pytest.fixture
def http_server() -> Iterator[BundleServer]:
    """A started loopback HTTP server with no routes; add them with ``http_server.add(path, Route(...))``."""
    with BundleServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Release keys and the standard signed demo bundles (built lazily, once per session)."""
    return make_release(tmp_path_factory.mktemp("release"))
