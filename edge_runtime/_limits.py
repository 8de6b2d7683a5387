"""Every limit the runtime applies to untrusted input, in one place (python-tuf ``UpdaterConfig`` style).

Untrusted input is anything not produced by this runtime on this device in this run: bundles and the
manifests inside them, HTTP responses, and the device's own config and state files (a failing disk or a
hand edit makes them untrusted too). Each parser takes its bounds from a :class:`Limits` object instead
of hard-coding them, so the bounds are documented once, tested at the threshold and one step beyond,
and can be tightened for a small device by constructing a different object.

Every limit is compared with ``>`` against the measured value: a value *equal* to a limit is accepted,
one step beyond is refused. Sizes are bytes, times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]

KiB = 1 << 10
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds for untrusted input. The defaults are what a device uses; see ``docs/DESIGN.md``."""

    # --- JSON documents (manifest envelope, device config, state files) -------------------------------
    #: largest ``manifest.json`` accepted, in bytes (the tar member and the parsed document)
    manifest_max_bytes: int = 1 * MiB
    #: largest device config / state / sidecar JSON file read, in bytes
    local_json_max_bytes: int = 1 * MiB
    #: deepest nesting of arrays and objects; checked by a linear scan *before* the JSON parser recurses
    json_max_depth: int = 32
    #: most digits in a JSON integer literal (sign excluded); Python's own cap is 4300 and costly
    json_max_int_digits: int = 32
    #: longest JSON non-integer number literal, in characters (``repr`` of any float is <= 24)
    json_max_number_chars: int = 64
    #: longest JSON string (keys included) after decoding escapes, in characters
    json_max_string_chars: int = 64 * KiB

    # --- manifest fields --------------------------------------------------------------------------
    #: most files a manifest may list
    manifest_max_files: int = 1000
    #: longest bundle member path, in characters (and, encoded as UTF-8, in bytes)
    max_path_chars: int = 255
    #: longest version string, in characters
    max_version_chars: int = 128
    #: longest backend / architecture name and most entries in those lists
    max_tag_chars: int = 64
    max_tags: int = 32
    #: most dimensions in a declared input shape, and the largest dimension
    max_shape_dims: int = 8
    max_shape_dim: int = 1 << 24
    #: most signatures an envelope may carry
    max_signatures: int = 16
    #: longest base64 signature text (a DER ECDSA P-256 signature is at most 72 bytes -> 96 chars)
    max_signature_chars: int = 256

    # --- trust root documents (edge_runtime.root) ---------------------------------------------------
    #: largest root document, in bytes (one with 16 keys is about 5 KiB)
    root_max_bytes: int = 64 * KiB
    #: most root documents applied in one update (a bundle or the role carries the chain)
    root_max_chain: int = 64
    #: most keys a root document may list
    root_max_keys: int = 32

    # --- tar headers (checked on the raw 512-byte blocks before tarfile parses them) ------------------
    #: largest PAX (``x``/``g``) or GNU long-name/long-link (``L``/``K``) extension header body, in bytes
    tar_max_ext_header_bytes: int = 4 * KiB
    #: most extension headers in front of one member
    tar_max_ext_headers_per_member: int = 3
    #: most members in a bundle (the manifest plus the files it may list)
    tar_max_members: int = 1001

    # --- key files -------------------------------------------------------------------------------
    #: largest PEM key file read (a P-256 key is < 1 KiB; a passphrase-encrypted one < 2 KiB)
    key_file_max_bytes: int = 64 * KiB

    # --- HTTP (used by the fetcher) ---------------------------------------------------------------
    #: longest status or header line, in bytes
    http_max_header_line: int = 8 * KiB
    #: most header lines in a response
    http_max_headers: int = 100
    #: total size of the response head (status line plus headers), in bytes
    http_max_header_bytes: int = 64 * KiB

    # --- smoke test child (edge_runtime._smoke_proc) ------------------------------------------------
    # deadline = start_allowance + model bytes / load rate + max(floor, margin * samples * repeats * p95 budget),
    # at most ``smoke_deadline_max_s``, rounded up to whole seconds. A child past it is killed (its whole
    # process group) and the version quarantined ("timed out after N s"). The margin covers a loaded
    # device: a passing run can have 5 % of its invocations over the budget, and the budget is a p95.
    #: multiple of the policy's worst passing inference time (samples x repeats x p95 budget)
    smoke_deadline_margin: float = 3.0
    #: least time granted to the inference part, whatever the policy says
    smoke_deadline_floor_s: float = 5.0
    #: child start-up: interpreter, numpy, the TFLite backend, the golden file (measured 0.12-0.25 s on
    #: the 2-core x86_64 test machine; a small ARM board is ~10x slower)
    smoke_start_allowance_s: float = 10.0
    #: model load rate assumed on top of the allowance (bytes/s; the file is mmapped and parsed)
    smoke_load_bytes_per_s: float = 20 * MiB
    #: no smoke test runs longer than this, whatever the signed policy implies
    smoke_deadline_max_s: float = 3600.0
    #: largest result document the child may send back (it is parsed as untrusted JSON)
    smoke_result_max_bytes: int = 64 * KiB
    #: how much of the child's stderr is kept (its tail) to explain a crash
    smoke_stderr_tail_bytes: int = 4 * KiB
    #: the child's address space cap (RLIMIT_AS): base + per_model_byte x model bytes. The demo models peak
    #: at ~180 MiB of address space (interpreter, numpy, LiteRT); a model that wants more fails its test in
    #: the child instead of waking the kernel's OOM killer (which would pick the child first anyway: its
    #: oom_score_adj is 1000)
    smoke_memory_base_bytes: int = 4 * 1024 * MiB
    smoke_memory_per_model_byte: int = 4


#: the limits a device uses unless told otherwise
DEFAULT_LIMITS = Limits()
