"""The fleet lock (plugin_utils/fleet_lock.py) and the per-run device plan (plugin_utils/device_plan.py).

Real processes stand in for ansible-playbook holders: a live ``sleep`` child holds the lock, a reaped
child is a crashed holder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import fleet_lock
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_plan import (
    PlanError,
    device_plan,
    plan_run,
    run_hosts,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def live() -> Any:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_second_run_is_refused_naming_the_holder(tmp_path: Path, live: Any) -> None:
    path = fleet_lock.lock_path(tmp_path, "fleet-a")
    first = fleet_lock.holder_for("fleet-a", "run-1", "deploy.yml", pid=live.pid)
    assert fleet_lock.acquire(path, first) is None
    second = fleet_lock.holder_for("fleet-a", "run-2", "rollback.yml", pid=os.getpid())
    with pytest.raises(fleet_lock.FleetLockError) as exc:
        fleet_lock.acquire(path, second, 0)
    msg = str(exc.value)
    assert f"pid {live.pid}" in msg
    assert "deploy.yml" in msg
    assert "run-1" in msg
    assert first.user in msg
    assert "edge_lock_wait" in msg
    assert fleet_lock.read(path) == first  # untouched


def test_a_waiting_run_takes_the_lock_when_the_holder_releases(tmp_path: Path, live: Any) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    fleet_lock.acquire(path, fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=live.pid))
    me = fleet_lock.holder_for("f", "run-2", "deploy.yml", pid=os.getpid())
    threading.Timer(0.3, fleet_lock.release, (path, "run-1")).start()
    t0 = time.monotonic()
    assert fleet_lock.acquire(path, me, 30) is None
    assert time.monotonic() - t0 < 10
    assert fleet_lock.read(path) == me


def test_waiting_stops_at_the_deadline(tmp_path: Path, live: Any) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    fleet_lock.acquire(path, fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=live.pid))
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    me = fleet_lock.holder_for("f", "run-2", "deploy.yml", pid=os.getpid())
    with pytest.raises(fleet_lock.FleetLockError):
        fleet_lock.acquire(path, me, 2.5, clock=lambda: now[0], sleep=sleep)
    assert sum(slept) == pytest.approx(2.5)
    with pytest.raises(fleet_lock.FleetLockError, match="0 or more"):
        fleet_lock.acquire(path, me, float("nan"))


def test_a_crashed_holder_is_taken_over_and_reported(tmp_path: Path) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    gone = fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=dead_pid())
    fleet_lock.acquire(path, gone)
    me = fleet_lock.holder_for("f", "run-2", "deploy.yml", pid=os.getpid())
    assert fleet_lock.acquire(path, me) == gone
    assert fleet_lock.read(path) == me


def test_a_recycled_pid_does_not_keep_the_lock(tmp_path: Path, live: Any) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    old = fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=live.pid)
    old = fleet_lock.Holder(**{**old.__dict__, "pid_start": "1"})  # same pid, another process start
    fleet_lock.acquire(path, old)
    assert fleet_lock.alive(old) is False
    me = fleet_lock.holder_for("f", "run-2", "deploy.yml", pid=os.getpid())
    assert fleet_lock.acquire(path, me) == old


def test_a_holder_on_another_host_counts_as_held_and_needs_force_to_clear(tmp_path: Path) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    other = fleet_lock.Holder("f", "run-1", "ops", "elsewhere.example", 1, None, "deploy.yml", "t")
    fleet_lock.acquire(path, other)
    me = fleet_lock.holder_for("f", "run-2", "deploy.yml", pid=os.getpid())
    with pytest.raises(fleet_lock.FleetLockError, match="another host"):
        fleet_lock.acquire(path, me)
    with pytest.raises(fleet_lock.FleetLockError, match="--force"):
        fleet_lock.clear(path)
    assert "cleared" in fleet_lock.clear(path, force=True)
    assert fleet_lock.status(path)["held"] is False


def test_clear_refuses_a_live_holder_and_removes_a_stale_one(tmp_path: Path, live: Any) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    fleet_lock.acquire(path, fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=live.pid))
    with pytest.raises(fleet_lock.FleetLockError, match="running process"):
        fleet_lock.clear(path)
    assert fleet_lock.status(path)["held"] is True
    live.kill()
    live.wait()
    assert fleet_lock.status(path)["held"] is False
    assert "cleared" in fleet_lock.clear(path)
    assert not path.exists()


def test_release_removes_only_this_runs_record(tmp_path: Path, live: Any) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    fleet_lock.acquire(path, fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=live.pid))
    assert fleet_lock.release(path, "run-2") is False
    assert path.exists()
    assert fleet_lock.release(path, "run-1") is True
    assert not path.exists()


def test_an_unreadable_record_counts_as_held(tmp_path: Path) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    path.write_text("{not json")
    me = fleet_lock.holder_for("f", "run-2", "deploy.yml", pid=os.getpid())
    with pytest.raises(fleet_lock.FleetLockError, match="unreadable"):
        fleet_lock.acquire(path, me)


def test_fleet_names_are_per_inventory_and_safe(tmp_path: Path) -> None:
    a, b = fleet_lock.fleet_name([str(tmp_path / "hosts.yml")]), fleet_lock.fleet_name([str(tmp_path / "x.yml")])
    assert a != b
    assert a.startswith("hosts.yml-")
    assert a == fleet_lock.fleet_name([str(tmp_path / "." / "hosts.yml")])
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(fleet_lock.FleetLockError):
            fleet_lock.lock_path(tmp_path, bad)


def test_the_script_shows_and_clears_a_stale_lock(tmp_path: Path) -> None:
    path = fleet_lock.lock_path(tmp_path, "f")
    fleet_lock.acquire(path, fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=dead_pid()))
    script = [sys.executable, str(REPO / "scripts" / "fleet_lock.py")]
    out = subprocess.run([*script, "status", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "stale" in out
    assert "run-1" in out
    out = subprocess.run([*script, "clear", str(path)], capture_output=True, text=True, check=True).stdout
    assert "cleared" in out
    assert not path.exists()


# ---------------------------------------------------------------- the per-run device plan ------------------

GROUPS = {"all": ["a1", "a2", "b1", "x9"], "edge_devices": ["a1", "a2", "b1"], "line_a": ["a1", "a2"],
          "line_b": ["b1"], "ungrouped": ["x9"]}
PIN = {"version": "1.1.0", "digest": "sha256:" + "1" * 64, "source": "/srv/reg/m/1.1.0.edgebundle", "size": 10,
       "release_counter": 2}
PLAN = {"hosts": {h: {"rollout_group": "line_a" if h[0] == "a" else "line_b", "wave": 1, "models": {"m": PIN}}
                  for h in ("a1", "a2", "b1")},
        "groups": {"line_a": {"hosts": ["a1", "a2"], "waves": [["a1"], ["a2"]]},
                   "line_b": {"hosts": ["b1"], "waves": [["b1"]]}}}


@pytest.mark.parametrize(("limit", "hosts"), [
    (None, ["a1", "a2", "b1"]),
    ("line_a,localhost", ["a1", "a2"]),
    ("all:!a1", ["a2", "b1"]),
    ("line_a,localhost,!a2", ["a1"]),
    ("edge_devices:&line_b", ["b1"]),
    ("~a[12]", ["a1", "a2"]),
])
def test_the_runs_devices_are_ansibles_own_resolution_of_the_limit(limit: str | None, hosts: list[str]) -> None:
    assert run_hosts(GROUPS, "edge_devices", limit) == hosts


def test_a_limit_file_is_resolved_like_ansible_does(tmp_path: Path) -> None:
    f = tmp_path / "hosts.txt"
    f.write_text("b1\nlocalhost\n")
    assert run_hosts(GROUPS, "edge_devices", f"@{f}") == ["b1"]
    with pytest.raises(PlanError, match="Unable to find limit file"):
        run_hosts(GROUPS, "edge_devices", f"@{tmp_path / 'missing.txt'}")


def test_a_limit_without_planned_devices_is_refused() -> None:
    with pytest.raises(PlanError, match="none of the 3 planned devices"):
        plan_run(PLAN, "r", GROUPS, {}, limit="localhost")


def test_the_run_plan_keeps_waves_lists_the_excluded_and_stamps_the_run_id() -> None:
    out = plan_run(PLAN, "run-7", GROUPS, {}, limit="all:!a1")
    plan = out["plan"]
    assert sorted(plan["hosts"]) == ["a2", "b1"]
    assert plan["excluded"] == ["a1"]
    assert plan["groups"]["line_a"]["waves"] == [[], ["a2"]]  # a2 stays in wave 2
    assert plan["run_id"] == "run-7"
    assert plan["run_hosts"] == ["a2", "b1"]
    assert {d["run_id"] for d in out["devices"].values()} == {"run-7"}
    assert all(e["run_id"] == "run-7" for e in plan["hosts"].values())


def test_transfer_and_paths_are_decided_per_device() -> None:
    local = device_plan("a1", PLAN["hosts"]["a1"], "r", {"ansible_connection": "local"})
    assert local["transfer"] == "pull"
    assert local["models"]["m"]["source"] == PIN["source"]
    assert local["models"]["m"]["push_src"] is None
    assert local["allowed_models"] == ["m"]
    ssh = device_plan("a1", PLAN["hosts"]["a1"], "r", {"edge_runtime_root": "/data/edge"})
    assert ssh["transfer"] == "push"
    assert ssh["push_dir"] == "/data/edge/downloads"
    assert ssh["models"]["m"]["source"] == "/data/edge/downloads/m-1.1.0.edgebundle"
    assert ssh["models"]["m"]["push_src"] == PIN["source"]
    url = {**PLAN["hosts"]["a1"], "models": {"m": {**PIN, "source": "https://reg/m.edgebundle"}}}
    assert device_plan("a1", url, "r", {"edge_model_transfer": "push"})["transfer"] == "pull"
    assert device_plan("a1", PLAN["hosts"]["a1"], "r", {"edge_model_transfer": "pull"})["transfer"] == "pull"
    with pytest.raises(PlanError, match="edge_model_transfer"):
        device_plan("a1", PLAN["hosts"]["a1"], "r", {"edge_model_transfer": "rsync"})


def test_the_venv_install_runs_only_on_devices_of_that_method_in_this_run() -> None:
    hv = {"a1": {"edge_runtime_install_method": "venv"}, "a2": {"edge_runtime_install_method": "preinstalled"},
          "b1": {}}
    out = plan_run(PLAN, "r", GROUPS, hv)
    assert out["venv_hosts"] == ["a1"]
    assert {h: d["runtime_install"] for h, d in out["devices"].items()} == {
        "a1": "venv", "a2": "preinstalled", "b1": "preinstalled"}  # the role's default: preinstalled
    assert plan_run(PLAN, "r", GROUPS, hv, limit="all:!a1")["venv_hosts"] == []  # --limit applies


def test_a_killed_holder_not_yet_reaped_is_stale(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    path = fleet_lock.lock_path(tmp_path, "f")
    fleet_lock.acquire(path, fleet_lock.holder_for("f", "run-1", "deploy.yml", pid=proc.pid))
    proc.kill()
    wait_until = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        assert time.monotonic() < wait_until
        time.sleep(0.05)
    assert fleet_lock.status(path)["held"] is False  # a zombie holds nothing
    proc.wait()
