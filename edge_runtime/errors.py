"""Errors raised by the edge runtime, grouped by origin.

Every error carries a one-line ``message`` that names the problem and a ``hint`` that names the fix.
``diagnostics()`` renders both for a person; ``to_dict()`` renders them for a machine. Security
failures derive from :class:`TrustError` and are never plain ``ValueError``.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

__all__ = [
    "BundleFormatError",
    "ConfigError",
    "DiskFullError",
    "DowngradeError",
    "DownloadError",
    "DownloadInterruptedError",
    "DownloadStalledError",
    "DownloadTooLargeError",
    "DownloadTooSlowError",
    "EdgeRuntimeError",
    "ExpiredError",
    "HTTPHeaderError",
    "HTTPStatusError",
    "ImmutableVersionError",
    "IncompatibleError",
    "IntegrityError",
    "KeyFileError",
    "LockedError",
    "ModelLoadError",
    "ModelNameError",
    "NotInstalledError",
    "OutputEncodingError",
    "PolicyError",
    "QuarantinedError",
    "RedirectRefusedError",
    "RollbackError",
    "RootError",
    "SignatureError",
    "StagingError",
    "StateCorruptError",
    "StateError",
    "TrustError",
    "UnsafeBundleError",
    "quote_untrusted",
    "safe_text",
]

#: characters that must never reach a terminal or a log verbatim: C0/C1 controls (newline and tab
#: excepted), lone surrogates (not encodable as UTF-8), bidirectional overrides ("Trojan Source")
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(text: str, *, newlines: bool = True) -> str:
    """``text`` with control characters, bidi overrides and lone surrogates escaped (``\\x1b``, ``\\udc80``).

    The result can always be encoded as UTF-8 and printed; tabs are kept, and newlines unless
    ``newlines=False`` (an error message is one line: a newline in it could fake a ``hint:`` line).
    """
    out = _UNSAFE_CHARS.sub(_escape_char, text)
    return out if newlines else out.replace("\n", "\\n")


def quote_untrusted(value: object, limit: int = 80) -> str:
    """Quote an untrusted name or value for an error message: escaped, and at most ``limit`` characters.

    Strings and bytes are shown like ``repr`` (every non-printable character escaped, lone surrogates
    included); anything else goes through ``str`` first.
    Longer values are cut and say how much was left out, so an attacker cannot flood a log.
    """
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value[: limit + 1])
        if len(value) <= limit:
            return repr(data)
        return f"{data[:limit]!r}... ({len(value)} bytes in all)"
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters in all)"


class EdgeRuntimeError(Exception):
    """Base class: something the operator can read and act on."""

    code: ClassVar[str] = "error"
    #: process exit status used by the CLIs for this class of error
    exit_code: ClassVar[int] = 1
    #: the fix to suggest when the raiser did not name a more specific one
    default_hint: ClassVar[str | None] = None

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.details = details

    def diagnostics(self) -> str:
        """A short explanation for a person: what went wrong and what to do."""
        text = f"error[{self.code}]: {safe_text(self.message, newlines=False)}"
        if self.hint:
            text += f"\n  hint: {safe_text(self.hint)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The same explanation as data, for ``--json`` output."""
        out: dict[str, Any] = {"error": self.code, "message": safe_text(self.message, newlines=False)}
        if self.hint:
            out["hint"] = safe_text(self.hint)
        if self.details:
            out["details"] = {k: _jsonable(v) for k, v in self.details.items()}
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # strict JSON has no NaN/Infinity
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


# --- configuration and local state -------------------------------------------------------------


class ConfigError(EdgeRuntimeError):
    """The device configuration or a command line is unusable."""

    code = "config"
    exit_code = 2
    default_hint = "see `edge-runtime --help`"


class KeyFileError(EdgeRuntimeError):
    """A key file cannot be read, has unsafe permissions, or is of the wrong type."""

    code = "key_file"
    exit_code = 2


class StateError(EdgeRuntimeError):
    """The persisted device state prevents the operation."""

    code = "state"
    default_hint = "run `edge-runtime status` to see the device state"


class StateCorruptError(StateError):
    """A state file on the device cannot be parsed; nothing is changed until it is repaired."""

    code = "state_corrupt"


class LockedError(StateError):
    """Another operation holds the device lock."""

    code = "locked"
    exit_code = 75  # EX_TEMPFAIL: try again later


class NotInstalledError(StateError):
    """The model has no committed version on this device."""

    code = "not_installed"


class OutputEncodingError(EdgeRuntimeError):
    """A document the runtime was about to write (state, facts, ``--json``) is not strict JSON.

    Raised instead of writing ``NaN``/``Infinity`` or an unencodable string; nothing was written.
    """

    code = "output_encoding"
    exit_code = 6
    default_hint = (
        "nothing was written; a value in it is not strict JSON (NaN/Infinity, or text that is not valid "
        "Unicode such as an undecodable file name): pass a valid value, or report it if it came from edge-runtime"
    )


class RollbackError(StateError):
    """A rollback target does not exist or cannot be activated."""

    code = "rollback"


# --- trust: signatures, integrity, bundle safety -------------------------------------------------


class TrustError(EdgeRuntimeError):
    """A security check failed. The bundle is rejected; nothing on the device changed."""

    code = "trust"
    exit_code = 3
    default_hint = "nothing on the device changed; rebuild the bundle with `edge-release build` or fetch it again"


class BundleFormatError(TrustError):
    """The bundle or its manifest is malformed."""

    code = "bundle_format"


class SignatureError(TrustError):
    """Missing, unknown or invalid signatures, or fewer valid ones than the threshold."""

    code = "signature"


class IntegrityError(TrustError):
    """A file's content, length or presence differs from the signed manifest."""

    code = "integrity"


class UnsafeBundleError(TrustError):
    """The bundle holds a path or member type that could escape staging."""

    code = "unsafe_bundle"
    default_hint = "bundles hold regular files with relative paths only; rebuild it with `edge-release build`"


class ExpiredError(TrustError):
    """The signed manifest has expired."""

    code = "expired"


class RootError(TrustError):
    """A trust root document (or a chain of them) is malformed, not signed as required, older than the
    device's, leaves a gap, or has expired."""

    code = "root"
    default_hint = (
        "nothing on the device changed; give the device the complete chain of root documents after its "
        "current version (edge_runtime_trust_root, or a bundle built by `edge-release publish`)"
    )


class DowngradeError(TrustError):
    """The release counter is lower than one already installed (a rollback attack or a mistake)."""

    code = "downgrade"


# --- policy: what this device accepts --------------------------------------------------------------


class PolicyError(EdgeRuntimeError):
    """The bundle is authentic but this device must not install it."""

    code = "policy"
    exit_code = 4
    default_hint = "nothing on the device changed; publish a bundle this device accepts"


class ModelNameError(PolicyError):
    code = "model_name"


class IncompatibleError(PolicyError):
    code = "incompatible"


class QuarantinedError(PolicyError):
    """The version failed on this device before and was rolled back."""

    code = "quarantined"


class ImmutableVersionError(PolicyError):
    """A version already on the device is offered again with different content."""

    code = "immutable_version"


# --- transfer and staging -----------------------------------------------------------------------------


class DownloadError(EdgeRuntimeError):
    """The bundle could not be fetched. A partial download is kept for resumption."""

    code = "download"
    exit_code = 5
    default_hint = "check the URL and the network, then run the same command again (it resumes)"


class HTTPStatusError(DownloadError):
    code = "http_status"


class DownloadStalledError(DownloadError):
    code = "download_stalled"


class DownloadInterruptedError(DownloadError):
    code = "download_interrupted"


class DownloadTooLargeError(DownloadError):
    """The server sent more bytes than were declared."""

    code = "download_too_large"


class DownloadTooSlowError(DownloadError):
    """The average rate fell below the minimum, or the download passed its overall deadline."""

    code = "download_too_slow"


class RedirectRefusedError(DownloadError):
    """A redirect broke the redirect rule (scheme, host, downgrade, count); nothing was fetched from it."""

    code = "redirect_refused"


class HTTPHeaderError(DownloadError):
    """The server's response head broke the HTTP limits (header count, line length, total size)."""

    code = "http_headers"


class StagingError(EdgeRuntimeError):
    code = "staging"
    exit_code = 6
    default_hint = "the active model is unchanged; fix the device storage and retry"


class DiskFullError(StagingError):
    code = "disk_full"


class ModelLoadError(EdgeRuntimeError):
    """The TFLite backend cannot load or run the model."""

    code = "model_load"
    exit_code = 7
    default_hint = "check that the model file matches the installed TFLite backend"
