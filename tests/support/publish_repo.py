"""A throw-away fleet repository for `edge-release publish` tests (tests/integration/test_publish*.py).

The catalogue as it was before 1.1.0 (only 1.0.0 of defect-classifier, in a directory registry), a 2-of-2 trust
root (the CI key and a release manager's key, both outside the repository), the demo data sets and the repository's
own release.yaml pointed at that registry and root.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_runtime.publish import load_release_config, publish

from .factory import DEMO_MODELS, MODEL, build, release_json
from .keys import KeyPair, make_keypair

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


class Setup:
    def __init__(self, base: Path) -> None:
        sys.path.insert(0, str(REPO / "scripts"))
        from demo_data import write_demo_data

        self.base = base
        self.keys_dir = base / "keys"  # outside the repository
        self.k: dict[str, KeyPair] = {n: make_keypair(self.keys_dir, n) for n in ("ci", "rm")}
        self.data = write_demo_data(base / "data")
        self.repo = base / "repo"
        self.registry = base / "registry"
        self.repo.mkdir()
        # the catalogue as it was before 1.1.0: only 1.0.0 of defect-classifier, in the registry
        text = (REPO / "models.yaml").read_text()
        text = re.sub(r'(?ms)^      "1\.[123]\.0":\n        bundle: defect-classifier/.*?release_counter: \d+\n', "",
                      text)
        text = re.sub(r"(?m)^registry: .*$", f"registry: {self.registry}", text)
        (self.repo / "models.yaml").write_text(text)
        (self.registry / MODEL).mkdir(parents=True)
        build("1.0.0", self.registry / MODEL / "1.0.0.edgebundle", [self.k["ci"]])
        # trust root version 1: bundles need both the CI key and the release manager's key
        self.root = self.repo / "trust" / "1.root.json"
        self.root.parent.mkdir()
        self.cli("root", "new", "-o", str(self.root), "--root-key", str(self.k["ci"].public_path),
                 "--release-key", str(self.k["ci"].public_path), "--release-key", str(self.k["rm"].public_path),
                 "--release-threshold", "2")
        self.cli("root", "sign", str(self.root), "--key", str(self.k["ci"].private_path))
        cfg = (REPO / "release.yaml").read_text()
        cfg = re.sub(r"(?m)^registry: .*$", f"registry: {self.registry}", cfg)
        cfg = re.sub(r"(?m)^trust_root: .*$", "trust_root: [trust/1.root.json]", cfg)
        (self.repo / "release.yaml").write_text(cfg)
        (self.repo / ".gitignore").write_text("reports/\n.state/\n")
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "add", ".")
        git(self.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fleet at 1.0.0")

    def cli(self, *args: str) -> dict[str, Any]:
        return release_json(*args)

    def publish(self, version: str, source: str | Path, *, keys: tuple[str, ...] = ("ci", "rm"),
                now: datetime = NOW, model: str = MODEL, **kw: Any) -> Any:
        """Publish ``source`` (a committed demo version's model.tflite, or any path) as ``model`` ``version``."""
        cfg = load_release_config(self.repo / "release.yaml")
        path = source if isinstance(source, Path) else DEMO_MODELS / MODEL / source / "model.tflite"
        return publish(cfg, model, version, path, self.data["train"], self.data["heldout"],
                       [self.k[k].private_path for k in keys], repo=self.repo,
                       workdir=self.base / f"work-{model}-{version}-{now.timestamp():.0f}", now=now, **kw)
