"""Every input of the hostile corpus (``tests/corpus``), fed to the real CLI in a child process.

For each input the invariant of issue 7 point 4 must hold: no traceback, an exit code from the
documented set (and the expected error code where the corpus names one), a bounded error message
with no raw control characters, the device root byte-identical afterwards, and a peak RSS of the
child below ``MAX_RSS_MIB`` -- several inputs declare 500-900 MiB headers and are grown sparsely to
that size, so a parser that buffers what a header declares fails here.

The corpus is written by ``tests/corpus/make_corpus.py`` (see its docstring for the case kinds).
Each input has its own copy of a device root; the CLI runs in a forked child of a pre-imported
server (tests/support/cli_forkserver.py: the same main() as the console script, ~0.2 CPU-s of imports
saved per input). The hostile file names below go through `python -m` itself.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_runtime._cli_common import EXIT_CODES
from edge_runtime.device import Device
from edge_runtime.errors import BundleFormatError
from edge_runtime.keys import sign
from edge_runtime.manifest import canonical_bytes
from edge_runtime.trust import key_id
from tests.support.cli_forkserver import wait_with_deadline
from tests.support.keys import KeyPair, make_keypair

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus"
INDEX: list[dict[str, Any]] = json.loads((CORPUS / "index.json").read_text(encoding="utf-8"))
MODEL = "defect-classifier"
#: the exit codes the CLIs document (``--help`` and the README print this same table); 130 is Ctrl-C
DOCUMENTED_EXIT_CODES = frozenset(EXIT_CODES) - {130}
#: a child that buffers a hostile header would need hundreds of MiB; the runtime itself needs ~40-110
MAX_RSS_MIB = 150
#: an error message quotes untrusted text truncated; nothing an attacker sends may make it long
MAX_MESSAGE_CHARS = 1000
TIMEOUT_S = 60.0
WORKERS = 3


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "tar" or "json"
    target: str  # install | manifest | signed-manifest | config | state
    file: str
    resign: bool
    extend_to: int | None
    error: str | None


def _cases() -> list[Case]:
    out = []
    for e in INDEX:
        if e["kind"] == "tar":
            out.append(Case(e["name"], "tar", "install", e["file"], e["resign"], e["extend_to"], e["error"]))
        else:
            for t in e["targets"]:
                error = e["error"] or {"manifest": "bundle_format", "config": "config"}.get(t)
                out.append(Case(f"{e['name']}[{t}]", "json", t, e["file"], False, None, error))
    return out


CASES = _cases()


def corpus_bytes(rel: str) -> bytes:
    data = (CORPUS / rel).read_bytes()
    return gzip.decompress(data) if rel.endswith(".gz") else data


def _tar_member(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _signed_envelope(doc: dict[str, Any], key: KeyPair) -> bytes:
    """``doc`` with its ``signed`` part signed by ``key`` (left unsigned if it has no canonical form)."""
    try:
        payload = canonical_bytes(doc["signed"])
    except BundleFormatError:  # e.g. a lone surrogate: the runtime must refuse it unsigned
        return json.dumps(doc).encode()
    sig = {"keyid": key_id(key.public), "sig": base64.b64encode(sign(key.private, payload)).decode()}
    return json.dumps({**doc, "signatures": [sig]}).encode()


def resign_first_member(data: bytes, key: KeyPair) -> bytes:
    """Replace the template manifest (a plain first member) with a signed one; keep every later byte."""
    size = int(data[124:136].split(b"\0")[0].strip() or b"0", 8)
    end = 512 + (size + 511) // 512 * 512
    manifest = _signed_envelope(json.loads(data[512 : 512 + size]), key)
    info = tarfile.TarInfo("manifest.json")
    info.size = len(manifest)
    return info.tobuf(tarfile.USTAR_FORMAT) + manifest + b"\0" * (-len(manifest) % 512) + data[end:]


def tree_hash(root: Path) -> dict[str, str]:
    """Path -> type, mode and content digest of everything under ``root``.

    The lock file's content (it names its last holder) and ``facts/`` (the device's report about
    itself) are the only things a refused command may rewrite.
    """
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        st = p.lstat()
        kind = stat.S_IFMT(st.st_mode)
        if rel.startswith("facts/") or (rel == "lock" and stat.S_ISREG(kind)):
            out[rel] = f"{kind:o}"
            continue
        if stat.S_ISLNK(kind):
            digest = os.readlink(p)
        elif stat.S_ISREG(kind):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            digest = ""
        out[rel] = f"{kind:o} {stat.S_IMODE(st.st_mode):o} {digest}"
    return out


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    max_rss_mib: float
    before: dict[str, str]
    after: dict[str, str]


def _run_child(argv: list[str], out_dir: Path) -> tuple[int, str, str, float]:
    """Run ``argv``; return exit status, stdout, stderr and the child's peak RSS (``wait4``)."""
    with (out_dir / "stdout").open("wb") as o, (out_dir / "stderr").open("wb") as e:
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, o.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, e.fileno(), 2),
            ],
        )
    rc, max_rss_kib = wait_with_deadline(pid, TIMEOUT_S)
    return (
        rc,
        (out_dir / "stdout").read_bytes().decode("utf-8", "backslashreplace"),
        (out_dir / "stderr").read_bytes().decode("utf-8", "backslashreplace"),
        max_rss_kib / 1024,
    )


def _prepare(case: Case, work: Path, template: Path, key: KeyPair) -> tuple[Path, list[str]]:
    """A fresh device root for ``case`` and the command to run against it."""
    root = work / "root"
    shutil.copytree(template, root, symlinks=True)
    data = corpus_bytes(case.file)
    bundle = work / "input.edgebundle"
    if case.target == "install":
        bundle.write_bytes(resign_first_member(data, key) if case.resign else data)
        if case.extend_to:
            os.truncate(bundle, case.extend_to)  # sparse: the declared size is real, the disk use is not
    elif case.target == "manifest":
        bundle.write_bytes(_tar_member("manifest.json", data))
    elif case.target == "signed-manifest":
        bundle.write_bytes(_tar_member("manifest.json", _signed_envelope(json.loads(data), key)))
    elif case.target == "config":
        (root / "config.json").write_bytes(data)
        return root, ["status"]
    elif case.target == "state":
        (root / "models" / MODEL).mkdir(parents=True, exist_ok=True)
        (root / "models" / MODEL / "state.json").write_bytes(data)
        return root, ["status"]
    return root, ["install", str(bundle)]


class ForkServer:
    """The real ``edge-runtime`` main() in a forked child per input (``tests/support/cli_forkserver.py``)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cli_forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        assert json.loads(self.stdout.readline()) == {"ready": True}

    def run(self, argv: list[str], out_dir: Path) -> tuple[int, str, str, float]:
        req = {
            "module": "edge_runtime.cli",
            "argv": argv,
            "timeout": TIMEOUT_S,
            "stdout": str(out_dir / "stdout"),
            "stderr": str(out_dir / "stderr"),
        }
        self.stdin.write(json.dumps(req) + "\n")
        self.stdin.flush()
        answer = json.loads(self.stdout.readline())
        return (
            answer["rc"],
            (out_dir / "stdout").read_bytes().decode("utf-8", "backslashreplace"),
            (out_dir / "stderr").read_bytes().decode("utf-8", "backslashreplace"),
            answer["max_rss_kib"] / 1024,
        )

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=30)


def _run_case(case: Case, base: Path, template: Path, key: KeyPair, server: ForkServer) -> Outcome:
    work = base / case.id.replace("[", "_").replace("]", "")
    work.mkdir()
    root, cmd = _prepare(case, work, template, key)
    before = tree_hash(root)
    rc, out, err, rss = server.run(["--root", str(root), "--json", *cmd], work)
    return Outcome(rc, out, err, rss, before, tree_hash(root))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    base = tmp_path_factory.mktemp("corpus")
    key = make_keypair(base / "keys", "corpus")
    template = base / "template"
    Device(template).init([key.public_path])
    server = ForkServer()
    try:
        results = {c.id: _run_case(c, base, template, key, server) for c in CASES}
    finally:
        server.close()
    yield results
    shutil.rmtree(base, ignore_errors=True)  # the sparse 500 MiB files


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_cleanly(case: Case, outcomes: dict[str, Outcome]) -> None:
    r = outcomes[case.id]
    assert "Traceback" not in r.stderr, r.stderr
    assert "error[internal]" not in r.stderr, "an unexpected exception (a bug)"
    assert '"internal"' not in r.stdout, "an unexpected exception (a bug)"
    assert r.rc in DOCUMENTED_EXIT_CODES, (r.rc, r.stdout, r.stderr)
    assert r.after == r.before, "the device root changed"
    assert r.max_rss_mib < MAX_RSS_MIB, f"peak RSS {r.max_rss_mib:.0f} MiB"
    assert not any(c < " " and c not in "\n" for c in r.stdout + r.stderr), "raw control characters in the output"
    if case.target == "state" and r.rc == 0:
        return  # status may report a corrupt state instead of failing; it must not crash or change it
    assert r.rc != 0, r.stdout
    out = json.loads(r.stdout)
    assert out["ok"] is False
    assert len(out["message"]) <= MAX_MESSAGE_CHARS, out["message"]
    if case.error:
        assert out["error"] == case.error, out


# --- hostile file names on the command line ----------------------------------------------------------

HOSTILE_NAMES: dict[str, bytes] = {
    "undecodable-byte": b"bundle-\xff\xfe.edgebundle",
    "very-long": b"n" * 5000 + b".edgebundle",
    "control-chars": b"\x1b[2J\x1b[31mred\nhint: run rm -rf\r.edgebundle",
    "bidi-override": "bundle-\u202egnp.edgebundle".encode(),
    "a-directory": b".",
    "missing-directory": b"/nonexistent-dir/x/y.edgebundle",
}


@pytest.fixture(scope="module")
def name_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[int, str, str, float]]:
    base = tmp_path_factory.mktemp("names")
    key = make_keypair(base / "keys", "names")
    root = base / "root"
    Device(root).init([key.public_path])
    hostile = corpus_bytes("tar/manifest-symlink.tar")
    for label in ("undecodable-byte", "control-chars", "bidi-override"):  # these exist, holding a hostile tar
        (base / os.fsdecode(HOSTILE_NAMES[label])).write_bytes(hostile)
    py = os.fsencode(sys.executable)
    commands = {
        "install": lambda n: [py, b"-m", b"edge_runtime.cli", b"--root", os.fsencode(root), b"--json", b"install", n],
        "verify": lambda n: [
            py,
            b"-m",
            b"edge_runtime.release_cli",
            b"verify",
            n,
            b"--trusted-key",
            os.fsencode(key.public_path),
        ],
        "inspect": lambda n: [py, b"-m", b"edge_runtime.release_cli", b"inspect", n],
    }
    jobs = [(label, cmd) for label in HOSTILE_NAMES for cmd in commands]

    def one(job: tuple[str, str]) -> tuple[int, str, str, float]:
        label, cmd = job
        work = base / f"{label}-{cmd}"
        work.mkdir()
        name = HOSTILE_NAMES[label]
        path = name if name.startswith(b"/") else os.fsencode(base) + b"/" + name
        return _run_child([os.fsdecode(a) for a in commands[cmd](path)], work)

    with ThreadPoolExecutor(WORKERS) as pool:
        return dict(zip(jobs, pool.map(one, jobs), strict=True))


@pytest.mark.parametrize("cmd", ["install", "verify", "inspect"])
@pytest.mark.parametrize("label", sorted(HOSTILE_NAMES))
def test_a_hostile_file_name_gives_a_typed_error(
    name_outcomes: dict[tuple[str, str], tuple[int, str, str, float]], label: str, cmd: str
) -> None:
    rc, out, err, _ = name_outcomes[(label, cmd)]
    assert "Traceback" not in err, err
    assert "error[internal]" not in err, "an unexpected exception (a bug)"
    assert '"internal"' not in out, "an unexpected exception (a bug)"
    assert rc in DOCUMENTED_EXIT_CODES - {0}, (rc, out, err)
    text = out + err
    assert not any(c < " " and c not in "\n" for c in text), "raw control characters in the output"
    assert "\u202e" not in text
    msg = json.loads(out)["message"] if cmd == "install" else err.splitlines()[0]
    assert len(msg) <= MAX_MESSAGE_CHARS, msg
