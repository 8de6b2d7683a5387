"""A 20-device SSH fleet rolls out in canary waves through every fault at once, then converges once they go.

One fleet (scripts/ssh_fleet.py: network namespaces, one sshd per device, host keys checked) and three runs
of the real playbooks/deploy.yml over SSH, pushing a file registry's bundles:

1. the first deploy on healthy devices (1.0.0 everywhere); its report gives each device's wave;
2. an upgrade of every group (canary waves) while, on devices outside the canary waves: three links are cut
   mid-transfer of the bundle (the link goes down when the pushed file is half there), one link flaps,
   one is limited to 1 Mbit/s, three drop 5 % of their packets at random, one device's sshd is killed,
   one device loses power mid-install (every process killed when its new version is pending, then it boots:
   recovery, sshd), one device's disk is full, one device's clock is 20 years ahead (its bundles look
   expired) and one 20 years behind. The run must finish within its timeout, every healthy device (the
   canaries, the rate-limited, lossy and backdated ones) must be upgraded, every device hit by a fault that
   stops it must be reported with its reason, and no device may be left without a valid, committed active
   version or with an operation half done;
3. the faults removed, the same deploy again, with no manual step: every device converges.

Cost: ~2-3 min on 2 cores (three deploys of 20 devices, ~8 s SSH timeouts on the cut devices).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sshfleet import Fleet, SshFleet, prerequisites

pytestmark = pytest.mark.slow

_REASON = prerequisites()
if _REASON is None and not Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1").exists():
    _REASON = "libfaketime is missing (Debian package faketime; make system-deps): the clock scenario needs it"

N = 20
OLD = {"line_a": ("defect-classifier", "1.0.0"), "line_b": ("defect-classifier", "1.0.0"),
       "lab": ("defect-classifier-int8", "1.0.0")}
NEW = {"line_a": ("defect-classifier", "1.1.0"), "line_b": ("defect-classifier", "1.1.0"),
       "lab": ("defect-classifier-int8", "1.1.0")}
# canary waves as committed; a faulty device is a failure its wave may absorb (healthy devices roll on)
ROLLOUT = {
    "line_a": {"waves": [1, "50%", "100%"], "max_fail_percent": 60},
    "line_b": {"waves": [1, "100%"], "max_fail_percent": 60},
    "lab": {"waves": ["100%"], "max_fail_percent": 60},
}


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshFleet]:
    if _REASON:
        pytest.skip(_REASON)
    base = tmp_path_factory.mktemp("sshfaults")
    SshFleet.build_registry(base)
    fleet = Fleet(base / "fleet")
    try:
        fleet.up(N, prefix=None, subnet=None, control_persist="10s",  # free names: sessions may run at once
                 trusted_key=base / "keys" / "demo-NOT-FOR-PRODUCTION.pub", log=lambda _m: None)
        yield SshFleet(base, fleet)
    finally:
        fleet.down(log=lambda _m: None)


def assert_every_device_whole(ssh: SshFleet, allowed: dict[str, set[str]]) -> None:
    """Every device runs a committed, verifying version of its pin (one of ``allowed[group]``), nothing pending."""
    for d in ssh.fleet.devices:
        model = NEW[d.group][0]
        st = ssh.device_state(d.host, model)
        assert st.get("active") in allowed[d.group], (d.host, st)
        assert st["pending"] is None, (d.host, st)
        assert st["state"] == "committed", (d.host, st)
        v = ssh.verify(d.host, model, st["active"])
        assert v.returncode == 0, (d.host, v.stdout, v.stderr)


def test_canary_rollout_through_every_fault_then_converges_once_they_are_gone(ssh: SshFleet) -> None:
    fleet = ssh.fleet
    hosts = [d.host for d in fleet.devices]

    # 1. first deploy, healthy
    ssh.write_models(OLD, ROLLOUT)
    first = ssh.playbook("deploy.yml", timeout=300)
    assert first.rc == 0, first.output[-6000:]
    assert {h: r["result"] for h, r in first.rows().items()} == dict.fromkeys(hosts, "installed"), first.report
    wave = {h: r["wave"] for h, r in first.rows().items()}
    assert_every_device_whole(ssh, {g: {v} for g, (_m, v) in OLD.items()})

    # 2. upgrade with faults on devices outside the canaries, at most 2 per wave of 4-5 (max_fail_percent 60)
    by_wave: dict[tuple[str, int], list[str]] = {}
    for d in fleet.devices:
        by_wave.setdefault((d.group, wave[d.host]), []).append(d.host)
    a2, a3 = by_wave[("line_a", 2)], by_wave[("line_a", 3)]
    b2, lab = by_wave[("line_b", 2)], by_wave[("lab", 1)]
    assert all(len(w) >= k for w, k in ((a2, 4), (a3, 4), (b2, 5), (lab, 5))), by_wave
    cut = [a2[0], a3[0], b2[0]]
    clock_ahead, flapping, power, sshd_dead, full = a2[1], a3[1], b2[1], lab[0], lab[1]
    rate_1m, clock_behind = a2[2], b2[2]
    lossy = [a3[2], b2[3], lab[2]]
    stopped = {*cut, clock_ahead, flapping, power, sshd_dead, full}
    healthy = [h for h in hosts if h not in stopped]

    cut_at: dict[str, int] = {}
    bundle_size = (ssh.registry / "defect-classifier" / "1.1.0.edgebundle").stat().st_size

    def pushing(host: str) -> bool:  # the bundle is arriving: edge_model's action sends it to <source>.part
        files = list((fleet.root(host) / "downloads").glob("*.edgebundle.part"))
        sizes = [f.stat().st_size for f in files]
        if sizes and max(sizes) < bundle_size:  # (sftp's writes land in bursts: often still 0 bytes here)
            cut_at[host] = max(sizes)
            return True
        return False

    def pending(host: str) -> bool:  # the new version is being installed (staged, tested or activating)
        p = fleet.root(host) / "models" / "defect-classifier" / "state.json"
        return json.loads(p.read_text()).get("pending") is not None

    try:
        for h in cut:
            fleet.rate(h, 512)  # a ~90 KB bundle takes ~1.5 s: time to catch it half-way
            fleet.watch(lambda h=h: pushing(h), lambda h=h: fleet.link(h, False), timeout=240)
        fleet.set_clock(clock_ahead, "+7300d")
        fleet.set_clock(clock_behind, "-7300d")
        fleet.flap(flapping, down_s=1.5, up_s=2.0)
        fleet.rate(rate_1m, 1000)
        for h in lossy:
            fleet.loss(h, 5)
        fleet.kill_sshd(sshd_dead)
        fleet.fill_disk(full)
        powered: list[str] = []
        fleet.watch(lambda: pending(power), lambda: (fleet.power_cut(power), powered.append(power)), timeout=240,
                    every=0.005)

        ssh.write_models(NEW, ROLLOUT)
        faulty = ssh.playbook("deploy.yml", timeout=420)
    finally:
        fleet.unflap(flapping)

    assert faulty.rc != 0, "a rollout with failed devices must fail the run"
    rows = faulty.rows()
    assert not faulty.report.get("halted"), faulty.report.get("halted")  # the waves absorbed the failures
    for h in healthy:
        assert rows[h]["result"] == "installed", (h, rows[h], faulty.output[-4000:])
        assert rows[h]["reported"] == NEW[fleet.device(h).group][1], rows[h]
    assert set(cut_at) == set(cut), f"links cut mid-transfer: {cut_at}, wanted {cut}"
    for h in cut:
        assert rows[h]["result"] == "unreachable", rows[h]
        assert not list((fleet.root(h) / "downloads").glob("*1.1.0.edgebundle")), f"{h}: the bundle arrived after all"
        # the interrupted transfer left no Ansible temporary files on the device, only the runtime's .part
        # file (replaced by the next push, expired like a partial download)
        assert not list((fleet.home(h) / ".ansible" / "tmp").glob("ansible-tmp-*")), h
    assert rows[sshd_dead]["result"] == "unreachable", rows[sshd_dead]
    assert powered == [power], "the power cut never found the install running"
    assert rows[power]["result"] in ("unreachable", "failed"), rows[power]
    assert rows[flapping]["result"] in ("installed", "unreachable"), rows[flapping]
    assert rows[full]["result"] == "failed", rows[full]
    assert "no space left" in rows[full]["reason"].lower(), rows[full]
    assert rows[clock_ahead]["result"] == "failed", rows[clock_ahead]
    assert "expired" in rows[clock_ahead]["reason"], rows[clock_ahead]
    for h in stopped - {flapping}:
        assert rows[h]["reason"], rows[h]
    # nothing half-done anywhere: each device runs a committed version that verifies (old or new)
    assert_every_device_whole(ssh, {g: {OLD[g][1], NEW[g][1]} for g in NEW})
    cut_faulty = faulty

    # 3. faults removed, no manual step: the same deploy converges every device
    for h in hosts:
        fleet.clear_faults(h)
    final = ssh.playbook("deploy.yml", timeout=300)
    assert final.rc == 0, final.output[-6000:]
    results: dict[str, Any] = {h: r["result"] for h, r in final.rows().items()}
    assert set(results.values()) <= {"installed", "unchanged"}, results
    for h in stopped - {flapping, power}:
        assert results[h] == "installed", (h, results[h])
    assert_every_device_whole(ssh, {g: {v} for g, (_m, v) in NEW.items()})
    for h in hosts:  # no pushed copy left, nor Ansible temporary files
        left = sorted(p.name for p in (fleet.root(h) / "downloads").iterdir())
        # the device whose install was killed mid-way (it installed from the pushed .part, then boot recovery
        # finished the install, so the rerun pushed nothing) keeps that .part until the runtime expires it
        # like a partial download; every other device has nothing there
        assert left == [] or (h == power and all(n.endswith(".edgebundle.part") for n in left)), (h, left)
        assert not list((fleet.home(h) / ".ansible" / "tmp").glob("ansible-tmp-*")), h
    # the healthy devices were left alone (in sync), the rerun touched only the devices that needed it
    for h in healthy:
        assert results[h] == "unchanged", (h, results[h], cut_faulty.rows()[h])
