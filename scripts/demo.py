"""The main job on the built-in simulated fleet (`make demo`).

1. Builds the demo registry from the committed demo models, signed with a demo key made on the spot
   (NOT FOR PRODUCTION), and resets the simulated fleet under .state/fleet.
2. Deploys models.yaml as committed: v1.0.0 everywhere (int8 on the lab group).
3. Promotes line_a to v1.1.0 — a one-line change of models.yaml — and rolls it out in waves.
4. Tries the bad v1.2.0 on line_b: the canary fails its smoke test, is rolled back, the rollout halts.
5. Prints the device-twin report (reports/latest.md).
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STATE = REPO / ".state"


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def promote(src: Path, dst: Path, group: str, model: str, version: str) -> None:
    """Write a copy of models.yaml with one group's pin changed, and show the one-line diff."""
    lines = src.read_text().splitlines(keepends=True)
    out, in_group, done = [], False, False
    for line in lines:
        if line.startswith(f"  {group}:"):
            in_group = True
        elif line.startswith("  ") and not line.startswith("   ") and in_group:
            in_group = False
        if in_group and not done and line.strip().startswith(f"{model}:"):
            indent = line[: len(line) - len(line.lstrip())]
            line = f'{indent}{model}: "{version}"\n'
            done = True
        out.append(line)
    if not done:
        raise SystemExit(f"demo: no pin for {model} in group {group}")
    # the copy lives elsewhere: pin the registry as an absolute path (relative paths follow the file)
    fixed = [f"registry: {(REPO / '.state' / 'registry')}\n" if ln.startswith("registry:") else ln for ln in out]
    dst.write_text("".join(fixed))
    sys.stdout.writelines(difflib.unified_diff(lines, out, "models.yaml", "models.yaml (pull request)", n=1))


def playbook(name: str, *extra: str, expect_ok: bool = True) -> None:
    cmd = [str(BIN / "ansible-playbook"), f"playbooks/{name}", *extra]
    print("$ " + " ".join(c.replace(str(REPO) + "/", "") for c in cmd), flush=True)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    rc = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
    if (rc == 0) != expect_ok:
        raise SystemExit(f"demo: ansible-playbook {name} exited {rc}, which this step did not expect")
    if not expect_ok:
        print(f"(ansible-playbook exited {rc}, as expected: the rollout halted)")


def main() -> int:
    banner("Set-up: demo registry signed with a demo key made here (NOT FOR PRODUCTION); fresh simulated fleet")
    subprocess.run([sys.executable, str(REPO / "scripts/build_registry.py")], check=True)
    fleet = STATE / "fleet"
    if fleet.exists():
        subprocess.run(["chmod", "-R", "u+w", str(fleet)], check=True)
        shutil.rmtree(fleet)
    work = STATE / "demo"
    work.mkdir(parents=True, exist_ok=True)

    banner("1. Deploy models.yaml as committed: defect-classifier 1.0.0 on line_a and line_b, int8 1.0.0 on lab")
    playbook("deploy.yml")

    banner("2. Pull request: promote line_a to 1.1.0 (a one-line diff); CI shows the plan with --check --diff")
    step2 = work / "models-line_a-1.1.0.yaml"
    promote(REPO / "models.yaml", step2, "line_a", "defect-classifier", "1.1.0")
    playbook("deploy.yml", "--check", "--diff", "-e", f"edge_models_file={step2}")
    banner("2b. Merge: the rollout runs in waves (1 canary, then 50%, then 100%), each gated on health")
    playbook("deploy.yml", "-e", f"edge_models_file={step2}")

    banner("3. Pull request: line_b to 1.2.0, which is signed but bad: the canary fails and the rollout halts")
    step3 = work / "models-line_b-1.2.0.yaml"
    promote(step2, step3, "line_b", "defect-classifier", "1.2.0")
    playbook("deploy.yml", "-e", f"edge_models_file={step3}", expect_ok=False)

    banner("4. The device twin: desired vs reported version per device (reports/latest.md)")
    print((REPO / "reports" / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
