"""The download policy: every limit, deadline and rule of :func:`edge_runtime._fetch.fetch`, as data.

:class:`FetchConfig` is the one place where the defaults of a download live (python-tuf's
``UpdaterConfig``): the CLI, the device config (``config.json`` ``"download"`` section) and the Ansible
modules pass *overrides* and never repeat a default. This module imports nothing heavy (no
``requests``), so a device's config can be validated on the no-op paths.

Limits are compared so that a value *equal* to a limit is accepted and one step beyond is refused,
except the minimum rate, where a rate equal to the minimum passes and anything slower is cut.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._limits import DEFAULT_LIMITS, Limits
from .errors import ConfigError, quote_untrusted

__all__ = ["FetchConfig"]

_KiB = 1 << 10
_MiB = 1 << 20
_GiB = 1 << 30


@dataclass(frozen=True)
class FetchConfig:
    """Limits, deadlines and rules of one download. All sizes in bytes, all times in seconds.

    A retrieval ends, with a typed error and nothing left that cannot be resumed, when:

    * no byte arrives for ``read_timeout`` (a stall; retried ``retries`` times, resuming);
    * after ``rate_grace_s``, fewer than ``min_rate`` bytes per second arrived on average over the last
      ``rate_window_s`` (a server dripping bytes just fast enough to avoid the stall timeout: TUF's
      slow-retrieval attack; not retried);
    * the whole download, retries and back-off included, exceeds its deadline of
      ``deadline_allowance_s + size / min_rate``, where size is the expected length (the pin), else the
      server's declared length, else ``max_bytes``;
    * the size (expected, declared, or the bytes actually sent) passes the expected length or
      ``max_bytes``, or writing would leave less than ``reserve_bytes`` free on the file system;
    * a redirect leaves http(s), goes from https to http, goes to another host or port than the URL's
      (unless listed in ``allowed_redirect_hosts``) or is the ``max_redirects + 1``-th in a row;
    * the response head exceeds the HTTP limits of ``limits`` (header count, line length, total size).
    """

    #: seconds to establish the TCP/TLS connection
    connect_timeout: float = 10.0
    #: a stall longer than this (no byte received) aborts the attempt
    read_timeout: float = 30.0
    #: hard cap on a download's size, and the cap when neither the pin nor the server declares a length
    max_bytes: int = 1 * _GiB
    #: extra attempts after a stall, a drop or a 5xx, each resuming with ``Range``
    retries: int = 3
    #: sleep before retry ``n`` (1-based) is ``backoff_s * 2**(n-1)`` (cut short by the deadline)
    backoff_s: float = 1.0
    #: most bytes read per system call; also the most the download holds in memory
    chunk_size: int = 1 * _MiB
    #: minimum average transfer rate in bytes per second (must be > 0: it also sets the deadline)
    min_rate: float = 4 * _KiB
    #: the average rate is measured over the last this many seconds (as long as ``read_timeout``, so a
    #: pause the stall rule tolerates is not cut by the rate rule)
    rate_window_s: float = 30.0
    #: the rate rule applies once an attempt (connection, headers, body) has run this long; until the
    #: window is full the rate is averaged since the attempt began (a drip is cut after ~10 s)
    rate_grace_s: float = 10.0
    #: fixed part of the overall deadline: ``deadline_allowance_s + size / min_rate``
    deadline_allowance_s: float = 120.0
    #: free bytes that must remain on the file system after the download (state and facts need room)
    reserve_bytes: int = 8 * _MiB
    #: redirects followed in a row (each one checked by the redirect rule)
    max_redirects: int = 5
    #: hosts (``name`` or ``name:port``) other than the URL's own that a redirect may lead to
    allowed_redirect_hosts: tuple[str, ...] = ()
    #: a partial download older than this is deleted at the start of the next download
    partial_max_age_s: float = 3 * 24 * 3600.0
    #: at most this many partial downloads are kept (newest first, the current one included)
    partial_max_count: int = 2
    #: HTTP response head limits (``http_max_headers``, ``http_max_header_line``, ``http_max_header_bytes``)
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        problems: list[str] = []

        def positive(name: str) -> None:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                problems.append(f"{name} must be > 0, got {value!r}")

        def non_negative(name: str) -> None:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be >= 0, got {value!r}")

        for name in ("connect_timeout", "read_timeout", "chunk_size", "min_rate", "rate_window_s"):
            positive(name)
        for name in (
            "max_bytes", "retries", "backoff_s", "rate_grace_s", "deadline_allowance_s", "reserve_bytes",
            "max_redirects", "partial_max_age_s", "partial_max_count",
        ):
            non_negative(name)
        hosts = self.allowed_redirect_hosts
        if isinstance(hosts, (list, tuple)):
            object.__setattr__(self, "allowed_redirect_hosts", tuple(str(h).strip().lower() for h in hosts))
            for h in self.allowed_redirect_hosts:
                if not _valid_host_entry(h):
                    problems.append(f"allowed_redirect_hosts entry {quote_untrusted(h)} is not 'host' or 'host:port'")
        else:
            problems.append("allowed_redirect_hosts must be a list of host names")
        if problems:
            raise ConfigError(
                "invalid download settings: " + "; ".join(problems),
                hint="fix the download settings (command-line options or the 'download' section of config.json)",
            )

    def deadline_s(self, size: int | None) -> float:
        """The overall deadline of a download of ``size`` bytes (``max_bytes`` when unknown)."""
        return self.deadline_allowance_s + (self.max_bytes if size is None else size) / self.min_rate

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> FetchConfig:
        """A copy with ``overrides`` applied (``None`` values ignored); unknown keys are a ConfigError."""
        if not overrides:
            return self
        changes = _checked(overrides, "download setting")
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None, what: str = "download settings") -> FetchConfig:
        """Build from a JSON-like mapping (the ``download`` section of ``config.json``)."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{what} must be an object, got {type(doc).__name__}")
        return cls().with_overrides(doc)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (without the HTTP parser limits, which belong to Limits)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "limits"}
        out["allowed_redirect_hosts"] = list(self.allowed_redirect_hosts)
        return out


#: settings a mapping may set, with the JSON types each accepts
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    f.name: ((list, tuple) if f.name == "allowed_redirect_hosts" else (int, float) if f.type in ("float",) else (int,))
    for f in dataclasses.fields(FetchConfig)
    if f.name != "limits"
}


def _checked(overrides: Mapping[str, Any], what: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    unknown = sorted(str(k) for k in overrides if k not in _FIELD_TYPES)
    if unknown:
        raise ConfigError(
            f"unknown {what}(s): {', '.join(quote_untrusted(k, 40) for k in unknown)}",
            hint=f"known settings: {', '.join(sorted(_FIELD_TYPES))}",
        )
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "allowed_redirect_hosts":
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                isinstance(h, str) for h in value
            ):
                raise ConfigError(f"{what} allowed_redirect_hosts must be a list of host names")
            changes[key] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, _FIELD_TYPES[key]):
            raise ConfigError(f"{what} {key} has the wrong type: {quote_untrusted(repr(value), 40)}")
        else:
            changes[key] = value
    return changes


def _valid_host_entry(entry: str) -> bool:
    host, sep, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(host) and all(c.isalnum() or c in "-._" for c in host)
