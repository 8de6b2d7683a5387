"""`edge-release publish`: the demo's 1.0.0 -> 1.1.0 story through the one release command, and its refusals.

Real everything: the committed demo models (no TensorFlow), the demo data generator, LiteRT inference for the
gate and the baseline, real signatures with a 2-of-2 trust root, a real Git repository, a directory registry,
and a real device install of the published bundle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
import threading
from datetime import timedelta
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import errors
from edge_runtime.audit import read_events
from edge_runtime.device import Device
from edge_runtime.publish import Evaluation, gate_decision, load_release_config, publish
from edge_runtime.release_cli import main as release_cli
from tests.support.factory import DEMO_MODELS, MODEL
from tests.support.publish_repo import NOW, Setup, git

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("publish"))


def test_demo_story_1_1_0_is_evaluated_published_signed_and_proposed_on_a_branch(setup: Setup, tmp_path: Path) -> None:
    head_before = git(setup.repo, "rev-parse", "HEAD")
    r = setup.publish("1.1.0", "1.1.0")
    assert r.decision == "published"
    assert (r.gate["passed"], r.gate["correct"], r.gate["n"], r.gate["value"]) == (True, 948, 1000, 0.948)
    assert r.previous["version"] == "1.0.0"
    assert r.previous["correct"] == 899
    assert r.trust_root_version == 1
    assert r.signed_by == sorted([setup.k["ci"].keyid, setup.k["rm"].keyid])
    # the registry holds the bundle; its baseline is the committed one, byte for byte (same format, same data)
    bundle = setup.registry / r.bundle
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        baseline = tar.extractfile("baseline.json").read()  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    assert "trust/1.root.json" in names
    assert json.loads(baseline) == json.loads((DEMO_MODELS / MODEL / "1.1.0" / "baseline.json").read_bytes())
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".tmp-")]
    # models.yaml: the work tree and HEAD are untouched; the branch changes line_a's pin and adds the catalogue entry
    assert git(setup.repo, "rev-parse", "HEAD") == head_before
    assert git(setup.repo, "status", "--porcelain") == ""
    diff = git(setup.repo, "diff", "main", r.branch, "--", "models.yaml")
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert changed == ['+      "1.1.0":', f"+        bundle: {MODEL}/1.1.0.edgebundle",
                       f'+        digest: "{r.digest}"', "+        release_counter: 2",
                       '-      defect-classifier: "1.0.0"', '+      defect-classifier: "1.1.0"']
    message = git(setup.repo, "log", "-1", "--format=%B", r.branch)
    assert message.startswith("release defect-classifier 1.1.0: line_a 1.0.0 -> 1.1.0")
    assert "Held-out accuracy 0.9480 (948/1000), gate >= 0.9300 (margin +0.0180); 1.0.0 had 0.8990 (+0.0490)" in message
    # the audit: JSON + Markdown report and the history line
    assert [Path(p).name for p in r.reports] == [f"defect-classifier-1.1.0-{NOW:%Y%m%dT%H%M%SZ}.{ext}"
                                                 for ext in ("json", "md")]
    assert "PUBLISHED" in Path(r.reports[1]).read_text()
    [event] = [e for e in read_events(setup.repo / "reports", "release") if e["subject"] == "defect-classifier 1.1.0"]
    assert event["data"]["signed_by"] == r.signed_by
    # a device that trusts today's key list (the CI key) installs it: it catches up to root 1, checks 2 of 2 and
    # runs the smoke test on the golden samples publish chose
    dev = Device(tmp_path / "dev")
    dev.init([setup.k["ci"].public_path])
    res = dev.install(str(bundle), expected_digest=r.digest)
    assert (res.result, res.active) == ("installed", "1.1.0")
    assert dev.current_root().version == 1


def test_same_version_with_other_content_is_refused_and_nothing_changes(setup: Setup) -> None:
    if not (setup.registry / MODEL / "1.1.0.edgebundle").exists():
        setup.publish("1.1.0", "1.1.0")
    before = (setup.registry / MODEL / "1.1.0.edgebundle").read_bytes()
    branches = git(setup.repo, "branch", "--list")
    with pytest.raises(errors.PolicyError, match=r"already holds defect-classifier/1\.1\.0\.edgebundle with manifest"):
        setup.publish("1.1.0", "1.1.0", now=NOW + timedelta(hours=1))  # another creation time: other content
    assert (setup.registry / MODEL / "1.1.0.edgebundle").read_bytes() == before
    assert git(setup.repo, "branch", "--list") == branches


def test_model_below_the_gate_is_refused_with_the_numbers(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    registry_before = sorted(p.name for p in (setup.registry / MODEL).iterdir())
    branches = git(setup.repo, "branch", "--list")
    rc = release_cli(["--json", "publish", "--config", str(setup.repo / "release.yaml"), "--model", MODEL,
                      "--model-version", "1.4.0", "--from", str(DEMO_MODELS / MODEL / "1.0.0" / "model.tflite"),
                      "--train", str(setup.data["train-small"]), "--heldout", str(setup.data["heldout"]),
                      "--key", str(setup.k["ci"].private_path), "--key", str(setup.k["rm"].private_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 4
    assert out["error"] == "gate"
    assert out["message"] == ("defect-classifier 1.4.0 not released: held-out accuracy 0.8990 (899/1000) is below "
                              "the gate 0.9300 by 0.0310")
    assert sorted(p.name for p in (setup.registry / MODEL).iterdir()) == registry_before
    assert git(setup.repo, "branch", "--list") == branches
    [event] = [e for e in read_events(setup.repo / "reports", "release") if e["subject"] == "defect-classifier 1.4.0"]
    assert event["data"]["decision"] == "refused"
    assert event["data"]["gate"]["margin"] == -0.031


def test_gate_is_compared_exactly_at_the_threshold_and_one_sample_below() -> None:
    at = gate_decision(Evaluation(1000, 899, {}), Fraction("0.899"))
    below = gate_decision(Evaluation(1000, 898, {}), Fraction("0.899"))
    assert (at["passed"], at["margin"]) == (True, 0.0)
    assert (below["passed"], below["margin"]) == (False, -0.001)


def test_too_few_release_keys_for_the_trust_root_is_refused_before_publishing(setup: Setup) -> None:
    before = sorted(p.name for p in (setup.registry / MODEL).iterdir())
    with pytest.raises(errors.SignatureError, match=r"1 valid signature\(s\) from trusted keys, 2 required"):
        setup.publish("1.5.0", "1.1.0", keys=("ci",))
    assert sorted(p.name for p in (setup.registry / MODEL).iterdir()) == before


def test_a_private_key_inside_the_repository_not_ignored_is_refused(setup: Setup) -> None:
    inside = setup.repo / "release-key.key"
    shutil.copy(setup.k["ci"].private_path, inside)
    inside.chmod(0o600)
    try:
        cfg = load_release_config(setup.repo / "release.yaml")
        with pytest.raises(errors.ConfigError, match=r"inside the Git work tree .* not ignored by Git"):
            publish(cfg, MODEL, "1.6.0", DEMO_MODELS / MODEL / "1.1.0" / "model.tflite", setup.data["train"],
                    setup.data["heldout"], [inside], repo=setup.repo, workdir=setup.base / "w")
    finally:
        inside.unlink()


class _UploadStore(BaseHTTPRequestHandler):
    """A static file server that accepts create-only uploads the way the documented convention says: PUT with
    If-None-Match: * stores the body under a temporary name and links it into place (412 if it exists)."""

    root: Path

    def log_message(self, *args: Any) -> None:
        pass

    def _path(self) -> Path:
        return self.root / self.path.lstrip("/")

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        target = self._path()
        if self.headers.get("If-None-Match") != "*":
            self.send_response(428)
        elif target.exists():
            self.send_response(412)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".upload-{target.name}")
            tmp.write_bytes(body)
            try:
                os.link(tmp, target)
                self.send_response(201)
            except FileExistsError:
                self.send_response(412)
            finally:
                tmp.unlink()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        target = self._path()
        data = target.read_bytes() if target.is_file() else b""
        self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_publish_to_an_http_registry_is_create_only(setup: Setup, tmp_path: Path) -> None:
    store = tmp_path / "www"
    handler = type("Handler", (_UploadStore,), {"root": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = dataclasses.replace(load_release_config(setup.repo / "release.yaml"),
                                  registry=f"http://127.0.0.1:{server.server_port}/models")
        keys = [setup.k["ci"].private_path, setup.k["rm"].private_path]
        args = (cfg, MODEL, "2.0.0", DEMO_MODELS / MODEL / "1.1.0" / "model.tflite", setup.data["train"],
                setup.data["heldout"], keys)
        r = publish(*args, repo=setup.repo, workdir=tmp_path / "w1", now=NOW)
        assert r.registry_result == "published"
        uploaded = store / "models" / MODEL / "2.0.0.edgebundle"
        assert uploaded.is_file()
        assert not [p for p in uploaded.parent.iterdir() if p.name.startswith(".upload-")]
        before = uploaded.read_bytes()
        git(setup.repo, "branch", "-D", r.branch)
        # the same signed content again: harmless ("already published"); other content: refused
        again = publish(*args, repo=setup.repo, workdir=tmp_path / "w2", now=NOW)
        assert again.registry_result == "already published"
        git(setup.repo, "branch", "-D", again.branch)
        with pytest.raises(errors.PolicyError, match=r"already holds http://.*/2\.0\.0\.edgebundle with manifest"):
            publish(*args, repo=setup.repo, workdir=tmp_path / "w3", now=NOW + timedelta(seconds=1))
        assert uploaded.read_bytes() == before
    finally:
        server.shutdown()
        server.server_close()


def test_the_release_branch_is_committed_without_a_git_identity_and_leaves_the_work_tree_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI runner often has no user.email: the branch is still made (author edge-release), HEAD untouched."""
    from edge_runtime.publish import commit_on_branch

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "models.yaml").write_text("a: 1\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    commit_on_branch(repo, "models.yaml", "a: 2\n", "release/x-1.0.0", "release x 1.0.0\n")
    assert git(repo, "show", "release/x-1.0.0:models.yaml") == "a: 2\n"
    author = git(repo, "log", "-1", "--format=%an <%ae>", "release/x-1.0.0").strip()
    assert author == "edge-release <edge-release@localhost>"
    assert (repo / "models.yaml").read_text() == "a: 1\n"
    assert git(repo, "status", "--porcelain") == ""
    with pytest.raises(errors.PolicyError, match=r"branch release/x-1\.0\.0 already exists"):
        commit_on_branch(repo, "models.yaml", "a: 3\n", "release/x-1.0.0", "again\n")
