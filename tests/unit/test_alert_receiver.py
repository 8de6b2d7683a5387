"""The alert receiver's decisions (scripts/alert_receiver.py) without HTTP (but the request deadline, on a real
server on 127.0.0.1): which group a firing alert rolls back,
once per cooldown, what is only logged, what is refused, and the token file rules. The playbook run itself is
replaced by a recorder here (the real run through ansible-runner is in tests/ansible/test_prometheus_alerting.py).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.alert_receiver import Handler, Receiver, Refused, Server, read_token

REPO = Path(__file__).resolve().parents[2]
INVENTORY = {"edge_devices": {"children": {
    "line_a": {"hosts": {"dev-a1": None, "dev-a2": None, "dev-x": None}},
    "line_b": {"hosts": {"dev-b1": None}},
    "lab": {"hosts": {"dev-l1": None, "dev-x": None}},
}}}


#: the pins the receiver reads (only ``groups``; rollback.yml reads the whole file)
MODELS = {"groups": {"line_a": {"models": {"m": "1.1.0", "other": "2.0.0"}}, "line_b": {"models": {"m": "1.1.0"}},
                     "lab": {"models": {"m": "1.1.0"}}}}


class Recording(Receiver):
    def __init__(self, **kw: Any) -> None:
        self.calls: list[tuple[str, str]] = []
        self.models_rolled: list[list[str]] = []
        self.outcome: tuple[int | None, str] = (0, "successful")
        super().__init__(**kw)

    def _rollback(self, group: str, why: str, models: list[str]) -> tuple[int | None, str]:
        self.calls.append((group, why))
        self.models_rolled.append(models)
        return self.outcome


@pytest.fixture
def receiver(tmp_path: Path) -> Recording:
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(INVENTORY))
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump(MODELS))
    return Recording(token="t" * 32, inventory=inv, models=models, extravars={}, data_dir=tmp_path,
                     cooldown_s=600, playbook_timeout_s=60, lock_wait_s=0)


def alert(name: str = "EdgeModelLowConfidence", device: str = "dev-a1", status: str = "firing",
          **labels: Any) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, "device": device, "model": "m", "version": "1.1.0",
                                         **labels},
            "annotations": {"summary": f"{device}: m 1.1.0 mean confidence 0.6000 below\n the threshold"},
            "startsAt": "2026-12-03T06:00:00Z"}


def settle(r: Recording, n: int) -> None:
    end = time.monotonic() + 10
    while (len(r.runs) < n or any(x["status"] == "running" for x in r.runs)) and time.monotonic() < end:
        time.sleep(0.01)
    assert len(r.runs) == n


def test_alerts_of_one_group_start_one_rollback_naming_every_alert_then_the_cooldown_holds(receiver: Recording) -> None:
    out = receiver.act(receiver.check({"version": "4", "alerts": [alert(), alert(device="dev-a2")]}))
    assert out["started"] == ["line_a"]
    settle(receiver, 1)
    [(group, why)] = receiver.calls
    assert group == "line_a"
    assert why == ("alert EdgeModelLowConfidence firing on dev-a1 (m 1.1.0) since 2026-12-03T06:00:00Z: dev-a1: m "
                   "1.1.0 mean confidence 0.6000 below the threshold; alert EdgeModelLowConfidence firing on dev-a2 "
                   "(m 1.1.0) since 2026-12-03T06:00:00Z: dev-a2: m 1.1.0 mean confidence 0.6000 below the threshold")
    again = receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))
    assert again["started"] == []
    assert "line_a m: a rollback started" in again["skipped"][0]
    assert "cooldown 600 s" in again["skipped"][0]
    receiver.cooldown_s = 0
    assert receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))["started"] == ["line_a"]
    settle(receiver, 2)


def test_report_alerts_and_resolved_notifications_start_nothing(receiver: Recording) -> None:
    out = receiver.act(receiver.check({"version": "4", "alerts": [
        alert("EdgeModelDataDrift"), alert("EdgeDeviceStale", device="dev-b1"), alert(status="resolved")]}))
    assert out["started"] == []
    assert len(out["logged"]) == 3
    time.sleep(0.1)
    assert receiver.calls == []


def test_the_group_is_the_first_models_yaml_group_holding_the_device_never_the_requests(receiver: Recording) -> None:
    assert receiver.group_of("dev-x") == "lab"  # in lab and line_a: lab comes first by name
    receiver.act(receiver.check({"version": "4", "alerts": [alert(device="dev-x", group="line_a")]}))
    settle(receiver, 1)
    assert receiver.calls[0][0] == "lab"


@pytest.mark.parametrize(("doc", "status", "problem"), [
    ({"version": "4", "alerts": []}, 400, "1 to 100 alerts"),
    ({"version": "4", "alerts": [{**alert(), "labels": {"alertname": 5}}]}, 400, "must be a string"),
    ({"version": "4", "alerts": [{**alert(), "annotations": {str(i): "x" for i in range(33)}}]}, 400, "at most 32"),
    ({"version": "4", "alerts": [alert(status="pending")]}, 400, "firing or resolved"),
    ({"version": "4", "alerts": [alert(device="edge_devices")]}, 422, "not a host"),
    ({"version": "4", "alerts": [alert(group="no_such_group")]}, 422, "does not hold"),
    ({"version": 4, "alerts": [alert()]}, 400, "version 4"),
])
def test_malformed_alerts_are_refused_naming_the_problem(receiver: Recording, doc: Any, status: int,
                                                          problem: str) -> None:
    with pytest.raises(Refused, match=problem) as exc:
        receiver.check(doc)
    assert exc.value.status == status


def test_the_token_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("s" * 32 + "\n")
    f.chmod(0o640)
    with pytest.raises(SystemExit, match="chmod 600"):
        read_token(f)
    f.chmod(0o600)
    assert read_token(f) == "s" * 32
    f.write_text("short")
    with pytest.raises(SystemExit, match="at least 16"):
        read_token(f)


PROBE = """\
- name: Probe what the receiver hands to the playbook
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write edge_rollback_why as the playbook sees it
      ansible.builtin.copy:
        content: "{{ edge_rollback_why }}"
        dest: "{{ probe_out }}"
        mode: "0600"
"""


def test_alert_text_is_never_templated_and_the_variables_never_reach_the_command_line(tmp_path: Path) -> None:
    """A real ansible-runner run of a probe playbook: the alert's text (labels and annotations a device's metrics
    fed) is passed verbatim, never evaluated as Jinja (that would run commands on the controller); the variables,
    the operator's extra vars with their secrets included, are in a private file, not in any process argument; a
    why longer than one argument may be (128 KiB) still runs."""
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(INVENTORY))
    pwned = tmp_path / "pwned"
    out = tmp_path / "why.txt"
    r = Receiver(token="t" * 32, inventory=inv, models=REPO / "models.yaml",
                 extravars={"probe_out": str(out), "some_secret": "s3cr3t-from-the-vault"},
                 data_dir=tmp_path / "runs", cooldown_s=600, playbook_timeout_s=120, lock_wait_s=0)
    r.playbook = tmp_path / "probe.yml"
    r.playbook.write_text(PROBE)
    why = (f"alert EdgeModelLowConfidence firing on dev-a1 (m {{{{ lookup('pipe', 'touch {pwned}') }}}}): "
           "{% raw %} {{ 6 * 7 }} " + "x" * 200_000)
    rc, status = r._rollback("line_a", why, ["m"])
    assert (rc, status) == (0, "successful")
    assert not pwned.exists(), "the alert's text was templated: a command ran on the controller"
    assert out.read_text() == why
    [pdd] = (tmp_path / "runs").iterdir()
    assert (pdd / "env" / "extravars").stat().st_mode & 0o777 == 0o600
    [command] = (pdd / "artifacts").glob("*/command")
    argv = command.read_text()
    assert "s3cr3t" not in argv
    assert "lookup" not in argv


def serve(receiver: Receiver, timeout: float, max_connections: int = 32) -> Server:
    """The receiver's HTTP server on a free port of 127.0.0.1, serving in a daemon thread."""
    handler = type("TestHandler", (Handler,), {"receiver": receiver, "timeout": timeout})
    server = Server(("127.0.0.1", 0), handler, max_connections)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_a_client_that_drips_its_request_is_cut_off_at_one_deadline_for_the_whole_request(
        receiver: Recording, stage: str) -> None:
    """Slow loris on a real server: a byte every 0.2 s never trips a per-recv timeout of 1 s; the whole request
    must still end at its 1 s deadline (the connection closed, nothing started)."""
    server = serve(receiver, 1.0)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as s:
            head = "POST /alerts HTTP/1.1\r\nHost: x\r\n"
            if stage == "body":
                head += ("Authorization: Bearer " + "t" * 32 + "\r\nContent-Type: application/json\r\n"
                         "Content-Length: 1000\r\n\r\n")
            s.sendall(head.encode())
            s.settimeout(0.2)
            start = time.monotonic()
            closed_after = None
            while time.monotonic() - start < 4:
                try:
                    s.sendall(b"X" if stage == "body" else b"X-Drip: x\r\n")
                    if s.recv(4096) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset by the server
                    closed_after = time.monotonic() - start
                    break
        assert closed_after is not None, "a dripping client held its connection for 4 s (deadline 1 s)"
        assert closed_after < 2.5
        assert receiver.calls == []
    finally:
        server.shutdown()
        server.server_close()


def test_an_alert_rolls_back_only_its_model_and_only_from_the_version_models_yaml_pins_now(
        receiver: Recording) -> None:
    """The rollback goes back FROM the group's pin: an alert about another version (a device not yet upgraded
    mid-rollout, a notification from before the pin changed) must not roll back the pinned version it does not
    accuse, and an alert about one model must not roll back the group's other models."""
    old = receiver.act(receiver.check({"version": "4", "alerts": [alert(version="1.0.0")]}))
    assert old["started"] == []
    assert old["skipped"] == ["dev-a1: the alert is about m 1.0.0, but line_a pins m 1.1.0: a rollback from the pin "
                              "would not undo it"]
    unpinned = receiver.act(receiver.check({"version": "4", "alerts": [alert(model="x")]}))
    assert "line_a pins no such model" in unpinned["skipped"][0]
    assert receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))["started"] == ["line_a"]
    settle(receiver, 1)
    assert receiver.models_rolled == [["m"]]  # not "other", pinned in line_a too
    # models.yaml is read at each notification, as rollback.yml reads it: a merged pin change counts at once
    now_pinned = {"groups": {**MODELS["groups"], "line_b": {"models": {"m": "1.2.0"}}}}
    receiver.models.write_text(yaml.safe_dump(now_pinned))
    stale = receiver.act(receiver.check({"version": "4", "alerts": [alert(device="dev-b1")]}))
    assert stale["started"] == []
    assert "line_b pins m 1.2.0" in stale["skipped"][0]
    assert receiver.act(receiver.check({"version": "4", "alerts": [alert(device="dev-b1", version="1.2.0")]}))[
        "started"] == ["line_b"]
    settle(receiver, 2)


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9\xb2", b"-1", b"1e3", b" "])
def test_a_content_length_that_is_not_ascii_digits_is_refused_with_411(receiver: Recording, length: bytes) -> None:
    """``"\u00b2".isdigit()`` is true but ``int("\u00b2")`` raises: such a header made the handler crash (no
    answer, a traceback instead of a JSON log line). Every malformed length is a clean 411."""
    server = serve(receiver, 5.0)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as s:
            s.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"t" * 32
                      + b"\r\nContent-Type: application/json\r\nContent-Length: " + length + b"\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 411 "), answer
        assert b"a Content-Length is required" in answer
    finally:
        server.shutdown()
        server.server_close()


def test_connections_beyond_the_limit_are_closed_on_arrival_and_the_slots_come_back(receiver: Recording) -> None:
    """A flood of idle connections must not grow threads without bound: beyond the limit a connection is closed at
    once; when the held ones end, a new one is served again."""
    server = serve(receiver, 3.0, max_connections=2)
    port = server.server_address[1]
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as extra:
            assert extra.recv(1) == b"", "a third connection was served beyond the limit of 2"
        for s in held:
            s.close()
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /status HTTP/1.0\r\nAuthorization: Bearer " + b"t" * 32 + b"\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.0 200 ")
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_rollback_does_not_hold_the_cooldown_the_next_notification_retries(receiver: Recording) -> None:
    """The rollback that failed (the fleet lock held by a deploy past --lock-wait, an unreachable device) is the
    one that is needed most: the next notification of the still-firing alert retries instead of waiting out the
    cooldown (and Alertmanager's repeat interval after it)."""
    receiver.outcome = (2, "failed")
    assert receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))["started"] == ["line_a"]
    settle(receiver, 1)
    assert receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))["started"] == ["line_a"]
    settle(receiver, 2)
    receiver.outcome = (0, "successful")
    assert receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))["started"] == ["line_a"]
    settle(receiver, 3)
    held = receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))
    assert held["started"] == []  # after a successful one the cooldown holds
    assert "cooldown 600 s" in held["skipped"][0]


def test_status_keeps_the_newest_runs_only(receiver: Recording, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver runs for months: the run list of GET /status (each with its why, up to ~300 KB) must not grow
    without bound."""
    monkeypatch.setattr("scripts.alert_receiver.MAX_RUNS_KEPT", 3)
    receiver.cooldown_s = 0
    for _ in range(5):
        receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))
    end = time.monotonic() + 10
    while len(receiver.calls) < 5 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(receiver.calls) == 5
    assert len(receiver.runs) == 3


@pytest.mark.parametrize("text", ["groups: {line_a: {models: [m]}}", "groups: [line_a]", "{{{", ""])
def test_a_broken_models_yaml_rolls_nothing_back_and_says_so(receiver: Recording, text: str) -> None:
    """models.yaml is read at each notification; one broken mid-edit must neither crash the request (no answer)
    nor start anything."""
    receiver.models.write_text(text)
    out = receiver.act(receiver.check({"version": "4", "alerts": [alert()]}))
    assert out["started"] == []
    assert out["skipped"][0].startswith("models.yaml unreadable, nothing rolled back: ")


def test_a_non_ascii_token_is_refused_at_start(tmp_path: Path, receiver: Recording) -> None:
    """Headers arrive as Latin-1, so a UTF-8 token could never match a request: every alert would be refused (401)
    while the receiver looked up. It is refused at start, naming the fix."""
    f = tmp_path / "token"
    f.write_text("é" * 32, encoding="utf-8")
    f.chmod(0o600)
    with pytest.raises(SystemExit, match="printable ASCII"):
        read_token(f)
    receiver.token = "é" * 32
    assert not receiver.authorised("Bearer " + ("é" * 32).encode().decode("latin-1"))
