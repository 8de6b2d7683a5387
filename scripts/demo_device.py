"""The single-device story, end to end, with the real CLIs (`make demo-device`).

Creates a release key (demo only), builds signed bundles from the committed demo models, and on one
simulated device under .state/demo-device: installs v1.0.0, upgrades to v1.1.0, refuses a tampered
bundle, rolls a broken model (v1.2.0) back automatically, and prints the status.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STATE = REPO / ".state" / "demo-device"


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def sh(*args: str | Path, expect: int = 0) -> str:
    shown = " ".join(str(a).replace(str(REPO) + "/", "") for a in args)
    print(f"$ {shown}", flush=True)
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print("  " + out.replace("\n", "\n  "), flush=True)
    if proc.returncode != expect:
        raise SystemExit(f"demo: expected exit {expect}, got {proc.returncode}")
    return proc.stdout


def tamper(src: Path, dst: Path) -> None:
    """Flip one byte of the model inside an otherwise valid, signed bundle."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            data = bytearray(tin.extractfile(m).read())  # type: ignore[union-attr]
            if m.name == "model.tflite":
                data[len(data) // 2] ^= 0xFF
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(bytes(data)))


def main() -> int:
    release, runtime = BIN / "edge-release", BIN / "edge-runtime"
    if STATE.exists():
        subprocess.run(["chmod", "-R", "u+w", str(STATE)], check=True)
        shutil.rmtree(STATE)
    keys, bundles, root = STATE / "keys", STATE / "bundles", STATE / "device"
    bundles.mkdir(parents=True)

    step("Release side: a signing key (demo only, NOT FOR PRODUCTION) and signed bundles")
    sh(release, "keygen", keys / "demo-NOT-FOR-PRODUCTION")
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        sh(release, "build", "--release-dir", REPO / "demo/models/defect-classifier" / v,
           "--key", keys / "demo-NOT-FOR-PRODUCTION.key", "-o", bundles / f"defect-classifier-{v}.edgebundle")
    sh(release, "verify", bundles / "defect-classifier-1.1.0.edgebundle",
       "--trusted-key", keys / "demo-NOT-FOR-PRODUCTION.pub")

    step("Device: trust the public key only")
    sh(runtime, "--root", root, "init", "--trusted-key", keys / "demo-NOT-FOR-PRODUCTION.pub",
       "--model", "defect-classifier")

    step("Install v1.0.0 (verify, stage, activate, smoke test with real TFLite inference, commit)")
    sh(runtime, "--root", root, "install", bundles / "defect-classifier-1.0.0.edgebundle")

    step("Upgrade to v1.1.0")
    sh(runtime, "--root", root, "install", bundles / "defect-classifier-1.1.0.edgebundle")

    step("A tampered bundle (one byte of the model flipped) is refused; nothing changes")
    tamper(bundles / "defect-classifier-1.1.0.edgebundle", bundles / "tampered.edgebundle")
    sh(runtime, "--root", root, "install", bundles / "tampered.edgebundle", expect=3)

    step("v1.2.0 is correctly signed but wrong: the smoke test fails and it is rolled back")
    sh(runtime, "--root", root, "install", bundles / "defect-classifier-1.2.0.edgebundle", expect=8)

    step("Status and facts")
    sh(runtime, "--root", root, "status")
    sh(runtime, "--root", root, "verify", "defect-classifier")
    print(f"\nDevice state lives under {root.relative_to(REPO)}; facts: "
          f"{(root / 'facts/edge_runtime.fact').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
