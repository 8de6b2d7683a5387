"""Fresh state only, one rollout at a time, --limit in every form: real ansible-playbook runs, 4 devices.

* A fact cache (jsonfile, the way AWX keeps facts) holds every device's twin from the last run; a device
  that does not answer in this run, or whose root was wiped, is never reported "unchanged".
* A second deploy started while one runs stops before it touches any device and names the holder; one
  told to wait (edge_lock_wait) runs after the first ends. A lock left by a run killed with -9 is taken over.
* ``--limit @file`` and negation restrict the plan to exactly the play's devices.

Every run uses the fact cache of this module's fleet and its own lock directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEVICES = ["s-a1", "s-a2", "s-b1", "s-l1"]


def inventory(path: Path, unreachable: str | None = None) -> Path:
    def host(name: str) -> str:
        if name != unreachable:
            return f"        {name}:\n"
        # SSH to a closed port on this machine: connection refused at once
        return (f"        {name}:\n          ansible_connection: ssh\n          ansible_host: 127.0.0.1\n"
                "          ansible_port: 1\n"
                "          ansible_ssh_common_args: -o ConnectTimeout=3 -o ControlMaster=no\n")

    path.write_text(
        "edge_devices:\n  vars:\n    ansible_connection: local\n"
        "    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n  children:\n"
        + "".join(f"    {g}:\n      hosts:\n" + "".join(host(h) for h in hs)
                  for g, hs in (("line_a", ["s-a1", "s-a2"]), ("line_b", ["s-b1"]), ("lab", ["s-l1"])))
    )
    return path


class Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "fleet"
        self.registry = base / "registry"
        self.keys = base / "keys"
        self.reports = base / "reports"
        self.locks = base / "locks"
        self.cache = base / "facts-cache"
        self.models = base / "models.yaml"
        self.inventory = inventory(base / "hosts.yml")
        self.runs = 0

    def write_models(self, pins: dict[str, str] | None = None) -> None:
        text = re.sub(r"(?m)^registry: .*$", f"registry: {self.registry}", (REPO / "models.yaml").read_text())
        for group, version in (pins or {}).items():
            text = re.sub(rf"(?ms)^(  {group}:\n    models:\n      [\w-]+: )\"[^\"]+\"", rf'\g<1>"{version}"', text)
        self.models.write_text(text)

    def start(self, *args: str, inv: Path | None = None, extra: dict[str, Any] | None = None) -> tuple[Any, Path]:
        """Start ansible-playbook deploy.yml in its own process group; output goes to a file."""
        self.runs += 1
        ev = self.base / f"extra-{self.runs}.json"
        ev.write_text(json.dumps({
            "edge_models_file": str(self.models),
            "edge_runtime_root": str(self.root) + "/{{ inventory_hostname }}",
            "edge_runtime_trusted_keys": [str(self.keys / "demo-NOT-FOR-PRODUCTION.pub")],
            "edge_reports_dir": str(self.reports),
            "edge_lock_dir": str(self.locks),
            **(extra or {}),
        }))
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
               # the fact cache of AWX-like setups: facts of earlier runs are loaded into hostvars
               "ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.cache),
               "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400"}
        out = self.base / f"run-{self.runs}.log"
        proc = subprocess.Popen(
            [str(BIN / "ansible-playbook"), "-i", str(inv or self.inventory), str(REPO / "playbooks" / "deploy.yml"),
             "-e", f"@{ev}", *args],
            cwd=self.base, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        return proc, out

    def run(self, *args: str, inv: Path | None = None, extra: dict[str, Any] | None = None) -> tuple[int, str]:
        proc, out = self.start(*args, inv=inv, extra=extra)
        rc = proc.wait(timeout=900)
        return rc, out.read_text()

    def report(self) -> dict[str, dict[str, Any]]:
        return {r["device"]: r for r in json.loads((self.reports / "latest.json").read_text())["rows"]}

    def active(self, host: str, model: str = "defect-classifier") -> str | None:
        p = self.root / host / "models" / model / "state.json"
        return json.loads(p.read_text()).get("active") if p.exists() else None

    def state_files(self, hosts: list[str]) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for h in hosts for p in sorted((self.root / h).rglob("state.json"))}


def wait_for(cond: Any, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.2)


def cached_facts(fleet: Fleet, host: str) -> dict[str, Any]:
    """The facts the jsonfile cache holds for ``host`` (file ``[<prefix>]<host>``, payload maybe wrapped)."""
    doc = json.loads(next(p for p in fleet.cache.iterdir() if p.name.endswith(host)).read_text())
    doc = json.loads(doc["__payload__"]) if "__payload__" in doc else doc
    return dict(doc.get("ansible_facts", doc))


def device_lines(out: str) -> list[str]:
    """Task results on a device (ok/changed) in a run's output."""
    return [line for line in out.splitlines() if re.match(r"^(ok|changed): \[s-", line)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    f = Fleet(tmp_path_factory.mktemp("fresh"))
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(f.registry),
                    "--keys", str(f.keys)], check=True, capture_output=True)
    f.write_models()
    return f


def test_a_second_deploy_stops_before_any_device_naming_the_holder_and_a_waiting_one_runs_after(
    fleet: Fleet,
) -> None:
    first, first_out = fleet.start()  # the first deploy of the fleet: installs everywhere (tens of seconds)
    wait_for(lambda: first.poll() is not None or any(fleet.locks.glob("*.lock")))
    lock = next(iter(fleet.locks.glob("*.lock")))
    holder = json.loads(lock.read_text())
    assert holder["pid"] == first.pid  # the ansible-playbook process holds it
    assert holder["playbook"] == "deploy.yml"

    waited: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: waited.update(
        zip(("rc", "out"), fleet.run(extra={"edge_lock_wait": 600}), strict=True)))
    waiter.start()
    rc, out = fleet.run()  # does not wait
    assert rc != 0
    assert f"is locked by {holder['user']}@{holder['host']}, pid {first.pid}, deploy.yml, run {holder['run_id']}" in out
    assert "nothing was changed" in out
    assert device_lines(out) == [], "the refused run touched a device"
    assert first.poll() is None, "the first deploy ended before the second was refused: the test proves nothing"

    assert first.wait(timeout=900) == 0, first_out.read_text()[-3000:]
    assert all(fleet.active(h) == "1.0.0" for h in ("s-a1", "s-a2", "s-b1"))
    waiter.join(timeout=900)
    assert waited["rc"] == 0, waited["out"][-3000:]
    assert not lock.exists(), "a deploy did not release the lock"
    # it ran after the first: every device was in sync and healthy (checked by the first run)
    assert {r["result"] for r in fleet.report().values()} == {"unchanged"}


def test_cached_or_stale_twins_never_count_as_fresh(fleet: Fleet) -> None:
    # the fact cache holds every device's twin from the runs above, in sync
    cached = cached_facts(fleet, "s-a2")
    assert cached["edge_runtime"]["models"]["defect-classifier"]["active_version"] == "1.0.0"
    shutil.rmtree(fleet.root / "s-l1")  # a wiped device root: it answers, with nothing installed
    rc, out = fleet.run(inv=inventory(fleet.base / "a2-unreachable.yml", unreachable="s-a2"))
    assert rc != 0, out[-3000:]
    rows = fleet.report()
    assert rows["s-a2"]["result"] == "unreachable", rows["s-a2"]
    assert "in this run" in rows["s-a2"]["reason"]
    assert rows["s-a2"]["reported"] is None  # the cached twin is not reported as the device's state
    assert rows["s-l1"]["result"] == "installed"
    assert fleet.active("s-l1", "defect-classifier-int8") == "1.0.0"
    assert rows["s-b1"]["result"] == "unchanged"
    assert "Rollout incomplete" in out


def test_a_lock_left_by_a_killed_run_is_taken_over(fleet: Fleet) -> None:
    proc, _ = fleet.start()
    wait_for(lambda: proc.poll() is not None or any(fleet.locks.glob("*.lock")))
    os.killpg(proc.pid, signal.SIGKILL)  # the controller dies: no release
    proc.wait()
    lock = next(iter(fleet.locks.glob("*.lock")))
    status = subprocess.run([sys.executable, str(REPO / "scripts" / "fleet_lock.py"), "status", str(fleet.locks)],
                            capture_output=True, text=True, check=True).stdout
    assert "stale" in status
    assert str(proc.pid) in status
    rc, out = fleet.run()
    assert rc == 0, out[-3000:]
    assert "took over the stale fleet lock of" in out
    assert f"pid {proc.pid}" in out
    assert not lock.exists()


def test_limit_from_a_file_restricts_the_plan_to_its_devices(fleet: Fleet) -> None:
    fleet.write_models({"line_a": "1.1.0", "line_b": "1.1.0"})
    before = fleet.state_files(["s-a1", "s-a2"])
    hosts = fleet.base / "limit.txt"
    hosts.write_text("s-b1\nlocalhost\n")
    rc, out = fleet.run("--limit", f"@{hosts}")
    assert rc == 0, out[-3000:]
    rows = fleet.report()
    assert set(rows) == {"s-b1"}
    assert rows["s-b1"]["result"] == "installed"
    assert fleet.active("s-b1") == "1.1.0"
    assert fleet.state_files(["s-a1", "s-a2"]) == before  # pinned to 1.1.0 too, but outside the limit
    report = json.loads((fleet.reports / "latest.json").read_text())
    assert set(report["excluded"]) == {"s-a1", "s-a2", "s-l1"}


def test_limit_with_a_negation_converges_all_but_the_negated_device(fleet: Fleet) -> None:
    before = fleet.state_files(["s-a1"])
    rc, out = fleet.run("--limit", "line_a:localhost:!s-a1")
    assert rc == 0, out[-3000:]
    rows = fleet.report()
    assert set(rows) == {"s-a2"}
    assert fleet.active("s-a2") == "1.1.0"
    assert fleet.state_files(["s-a1"]) == before
    # a limit that leaves no device is refused (by Ansible itself here), not a silent no-op with exit 0
    rc, out = fleet.run("--limit", "localhost,s-x9")
    assert rc != 0
    assert "leaves none of the" in out or "no hosts to target" in out
