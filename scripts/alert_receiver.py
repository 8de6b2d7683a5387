#!/usr/bin/env python3
"""Alertmanager webhook receiver: a firing rollback alert rolls the device's group back with playbooks/rollback.yml.

    .venv/bin/python scripts/alert_receiver.py --token-file /etc/edge/alert-token \\
        --inventory inventory/production --models models.yaml [--listen 127.0.0.1:9095] [--extra-vars-file ev.json]

Alertmanager (``webhook_configs`` with ``http_config.authorization.credentials_file`` holding the same token, see
docs/MONITORING.md) POSTs its JSON (version 4) to ``/alerts``. The receiver treats every request as hostile:

* only ``POST /alerts`` (and ``GET /status``), only with ``Authorization: Bearer <token>`` (compared in constant
  time; the token file must not be readable by group or others, at least 16 characters);
* a body of at most 256 KiB with a Content-Length, read with a deadline, strict JSON (no NaN), at most 100
  alerts of at most 32 labels/annotations of at most 1024 characters each;
* only alert names of prometheus/rules/edge.rules.yml (:data:`ALERT_ACTIONS`); the ``device`` label must be a
  host of the inventory's ``edge_devices`` and a ``group`` label, if any, an inventory group holding it.

Anything else is refused (401, 404, 405, 411, 413, 415, 400 or 422 with a JSON reason) and nothing runs: one bad
alert refuses the whole request. A valid ``firing`` alert whose action is ``rollback`` starts, in one worker
thread, ``ansible-playbook playbooks/rollback.yml -e edge_rollback_targets=<group>`` with
``edge_rollback_models`` the alerted models, through ansible-runner's Python API, with ``edge_rollback_why``
naming the alert, the device, model, version and the alert's summary (its value), which the rollback report
keeps. The variables are written to the run's private ``env/extravars`` (mode 600, never the command line) and
the alert text in them is ``!unsafe``: Ansible never templates it. The group is the device's rollout group: the
first group of ``models.yaml`` (by name) that holds the device, as ``desired_state`` decides. Only an alert
about the version ``models.yaml`` pins for that group and model now (what the rollback goes back from) rolls
back, and only that model: an alert about another version is skipped, saying why. A group's model is rolled
back at most once per ``--cooldown`` seconds (Alertmanager repeats notifications, and several devices of a
group alert at once) -- unless that rollback failed: then the next notification retries; ``report`` alerts
and ``resolved`` notifications are acknowledged and logged only. The fleet lock of the playbook keeps the
rollback from racing a deploy (``edge_lock_wait`` seconds of waiting).

Logs are JSON lines on stderr. Binds 127.0.0.1 unless told otherwise (put a TLS proxy in front for any other
address).
"""

from __future__ import annotations

import argparse
import hmac
import io
import json
import os
import queue
import socket
import stat
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

#: every alert of prometheus/rules/edge.rules.yml and what the receiver does with it (a test holds them equal)
ALERT_ACTIONS = {
    "EdgeModelLowConfidence": "rollback",
    "EdgeModelErrorRateHigh": "rollback",
    "EdgeModelWrongRateHigh": "rollback",
    "EdgeModelDataDrift": "report",
    "EdgeDeviceOutOfSync": "report",
    "EdgeDeviceStale": "report",
}
MAX_BODY = 256 * 1024
MAX_ALERTS = 100
MAX_PAIRS = 32
MAX_TEXT = 1024
READ_DEADLINE_S = 10.0
MIN_TOKEN = 16
#: rollback runs ``GET /status`` lists (the newest; the rollback reports keep every run)
MAX_RUNS_KEPT = 100
#: connections served at once; more are closed at once (each lives at most the request deadline)
MAX_CONNECTIONS = 32


class Refused(Exception):
    """A request that is refused: HTTP status and the reason (sent back as JSON)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def log(event: str, **fields: Any) -> None:
    sys.stderr.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event,
                                 **fields}, sort_keys=True) + "\n")
    sys.stderr.flush()


def read_token(path: Path) -> str:
    """The shared secret, from a file only its owner can read (refused otherwise, naming the fix)."""
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SystemExit(f"alert_receiver: {path} is readable by group or others; chmod 600 {path}")
    token = path.read_text(encoding="utf-8").strip()
    # ASCII: HTTP headers arrive as Latin-1, so a non-ASCII token could never match a request (fail at start)
    if len(token) < MIN_TOKEN or not (token.isascii() and token.isprintable()) or " " in token:
        raise SystemExit(f"alert_receiver: the token in {path} must be at least {MIN_TOKEN} printable ASCII "
                         "characters without spaces (e.g. `openssl rand -hex 32`)")
    return token


def load_inventory(inventory: Path) -> dict[str, set[str]]:
    """Group -> hosts of the inventory, as Ansible itself reads it (every inventory format)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    inv = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    return {name: {h.name for h in g.get_hosts()} for name, g in inv.groups.items()}


def load_pins(models: Path) -> dict[str, dict[str, str]]:
    """Group -> model -> the version ``models.yaml`` pins (what ``rollback.yml`` rolls back from), read now.

    Raises :class:`ValueError` naming the problem when the file has no usable groups.
    """
    doc = yaml.safe_load(models.read_text(encoding="utf-8"))
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"{models} has no groups")
    pins: dict[str, dict[str, str]] = {}
    for g, spec in groups.items():
        models_of = (spec.get("models") if isinstance(spec, dict) else None) or {}
        if not isinstance(models_of, dict):
            raise ValueError(f"{models}: groups.{g}.models is not a mapping of model -> version")
        pins[str(g)] = {str(m): str(v) for m, v in models_of.items()}
    return pins


def load_groups(models: Path) -> list[str]:
    """The rollout groups ``models.yaml`` pins, by name."""
    try:
        return sorted(load_pins(models))
    except ValueError as exc:
        raise SystemExit(f"alert_receiver: {exc}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise Refused(400, f"{what} must be a string of at most {MAX_TEXT} characters")
    return value


def _pairs(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_PAIRS:
        raise Refused(400, f"{what} must be an object of at most {MAX_PAIRS} strings")
    return {_text(k, f"a key of {what}"): _text(v, f"{what}[{k!r}]") for k, v in value.items()}


class Receiver:
    """The decisions (validation, group, cooldown) apart from HTTP, and the worker that runs the playbook."""

    def __init__(self, *, token: str, inventory: Path, models: Path, extravars: Mapping[str, Any],
                 data_dir: Path, cooldown_s: float, playbook_timeout_s: int, lock_wait_s: int) -> None:
        self.token = token
        self.inventory = inventory
        self.models = models
        self.groups = load_inventory(inventory)
        self.devices = self.groups.get("edge_devices", set())
        self.rollout_groups = [g for g in load_groups(models) if g in self.groups]
        self.extravars = dict(extravars)
        self.data_dir = data_dir
        self.cooldown_s = cooldown_s
        self.playbook_timeout_s = playbook_timeout_s
        self.lock_wait_s = lock_wait_s
        self.playbook = REPO / "playbooks" / "rollback.yml"
        self.lock = threading.Lock()
        self.last_started: dict[tuple[str, str], float] = {}
        self.runs: list[dict[str, Any]] = []
        self.jobs: queue.Queue[tuple[str, str, list[str]] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="rollback-worker", daemon=True)
        self.worker.start()

    def authorised(self, header: str | None) -> bool:
        want = f"Bearer {self.token}".encode()
        return header is not None and hmac.compare_digest(header.encode("utf-8", "replace"), want)

    def group_of(self, device: str) -> str | None:
        return next((g for g in self.rollout_groups if device in self.groups[g]), None)

    def check(self, doc: Any) -> list[dict[str, str]]:
        """The alerts of a webhook payload, each checked; a :class:`Refused` names the first problem."""
        if not isinstance(doc, dict) or doc.get("version") != "4":
            raise Refused(400, "not an Alertmanager webhook payload (version 4)")
        alerts = doc.get("alerts")
        if not isinstance(alerts, list) or not 1 <= len(alerts) <= MAX_ALERTS:
            raise Refused(400, f"alerts must be a list of 1 to {MAX_ALERTS} alerts")
        out = []
        for i, a in enumerate(alerts):
            if not isinstance(a, dict):
                raise Refused(400, f"alert {i} is not an object")
            labels = _pairs(a.get("labels"), f"alert {i} labels")
            annotations = _pairs(a.get("annotations", {}), f"alert {i} annotations")
            status = a.get("status")
            if status not in ("firing", "resolved"):
                raise Refused(400, f"alert {i}: status must be firing or resolved")
            name = labels.get("alertname", "")
            if name not in ALERT_ACTIONS:
                raise Refused(422, f"alert {i}: unknown alert name {name[:80]!r} (known: {', '.join(ALERT_ACTIONS)})")
            device = labels.get("device", "")
            if device not in self.devices:
                raise Refused(422, f"alert {i} ({name}): device {device[:80]!r} is not a host of the inventory's "
                              "edge_devices")
            group = self.group_of(device)
            if "group" in labels and (labels["group"] not in self.groups or device not in self.groups[labels["group"]]):
                raise Refused(422, f"alert {i} ({name}): group {labels['group'][:80]!r} does not hold {device}")
            out.append({"alertname": name, "status": str(status), "device": device, "group": group or "",
                        "model": labels.get("model", ""), "version": labels.get("version", ""),
                        "summary": " ".join(annotations.get("summary", "").split()),
                        "starts_at": _text(a.get("startsAt", ""), f"alert {i} startsAt")[:40]})
        return out

    def act(self, alerts: list[dict[str, str]]) -> dict[str, Any]:
        """Start one rollback per group with a firing rollback alert (outside its cooldown), of the alerted models.

        An alert rolls back only what it is about: its model, and only when that model's version is the one
        ``models.yaml`` pins for the group now (read at each notification, as ``rollback.yml`` reads it), since the
        rollback goes back FROM that pin. An alert about another version -- a device not yet upgraded mid-rollout,
        a stale notification after the pin changed -- is skipped, saying why: rolling the group back from its pin
        would undo a version the alert does not accuse. The cooldown is per group and model.
        """
        started, skipped, logged = [], [], []
        why: dict[tuple[str, str], list[str]] = {}
        try:
            pins = load_pins(self.models)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            pins = {}
            skipped.append(f"models.yaml unreadable, nothing rolled back: {str(exc)[:200]}")
        for a in alerts:
            if a["status"] != "firing" or ALERT_ACTIONS[a["alertname"]] != "rollback":
                logged.append(f"{a['alertname']} {a['status']} {a['device']}")
                continue
            if not a["group"]:
                skipped.append(f"{a['device']}: no models.yaml group holds it")
                continue
            pinned = pins.get(a["group"], {}).get(a["model"])
            if pinned != a["version"]:
                skipped.append(f"{a['device']}: the alert is about {a['model'][:80]} {a['version'][:40]}, but "
                               f"{a['group']} pins " + (f"{a['model'][:80]} {pinned}" if pinned else "no such model")
                               + ": a rollback from the pin would not undo it")
                continue
            why.setdefault((a["group"], a["model"]), []).append(
                f"alert {a['alertname']} firing on {a['device']} ({a['model']} {a['version']}) since "
                f"{a['starts_at']}: {a['summary']}")
        now = time.monotonic()
        jobs: dict[str, tuple[list[str], list[str]]] = {}
        with self.lock:
            for (group, model), reasons in sorted(why.items()):
                last = self.last_started.get((group, model))
                if last is not None and now - last < self.cooldown_s:
                    skipped.append(f"{group} {model}: a rollback started {now - last:.0f} s ago "
                                   f"(cooldown {self.cooldown_s:g} s)")
                    continue
                self.last_started[(group, model)] = now
                models, texts = jobs.setdefault(group, ([], []))
                models.append(model)
                texts.extend(reasons)
            for group, (models, texts) in sorted(jobs.items()):
                self.jobs.put((group, "; ".join(texts), models))
                started.append(group)
        log("alerts", started=started, skipped=skipped, logged=logged)
        return {"started": started, "skipped": skipped, "logged": logged}

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            group, why, models = job
            run: dict[str, Any] = {"group": group, "models": models, "why": why, "status": "running", "rc": None}
            with self.lock:
                self.runs.append(run)
                del self.runs[:-MAX_RUNS_KEPT]  # a daemon that runs for months: memory stays bounded
            log("rollback_start", group=group, models=models, why=why)
            try:
                run["rc"], run["status"] = self._rollback(group, why, models)
            except Exception as exc:
                run["status"] = f"error: {type(exc).__name__}: {exc}"
            if run["rc"] != 0:
                # a rollback that did not complete (the fleet lock held by a deploy past --lock-wait, a device
                # that failed) must not hold the cooldown: the next notification of a still-firing alert retries
                with self.lock:
                    for m in models:
                        self.last_started.pop((group, m), None)
                run["retry"] = "at the next notification (no cooldown after a failed rollback)"
            log("rollback_end", group=group, rc=run["rc"], status=run["status"])

    def _private_data_dir(self, group: str, why: str, models: list[str]) -> Path:
        """A new ansible-runner private data directory whose ``env/extravars`` (mode 600) holds the run's variables.

        The variables go into that file, never onto the command line: the operator's ``--extra-vars-file`` may hold
        secrets (``ps`` shows every argument to every user) and a long ``why`` would exceed the kernel's 128 KiB
        limit of one argument (E2BIG: no rollback at all). The ``why`` is alert text -- labels and annotations
        Prometheus took from the devices' metrics -- so it is tagged ``!unsafe``: Ansible never templates it (a
        summary holding ``{{ lookup('pipe', ...) }}`` would otherwise run on the controller).
        """
        pdd = self.data_dir / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{group}-{os.urandom(3).hex()}"
        (pdd / "env").mkdir(mode=0o700, parents=True, exist_ok=False)
        pdd.chmod(0o700)
        variables = {**self.extravars, "edge_models_file": str(self.models), "edge_rollback_targets": group,
                     "edge_rollback_models": list(models), "edge_rollback_why": _Unsafe(why),
                     "edge_lock_wait": self.lock_wait_s}
        fd = os.open(pdd / "env" / "extravars", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.dump(variables, f, Dumper=_VarsDumper, allow_unicode=True, width=1 << 30)
        return pdd

    def _rollback(self, group: str, why: str, models: list[str]) -> tuple[int | None, str]:
        import ansible_runner  # type: ignore[import-untyped]

        pdd = self._private_data_dir(group, why, models)
        r = ansible_runner.run(
            private_data_dir=str(pdd),
            playbook=str(self.playbook),
            inventory=str(self.inventory),
            envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                     "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
            quiet=True,
            timeout=self.playbook_timeout_s,
        )
        return r.rc, str(r.status)


class _Unsafe(str):
    """Text Ansible must never template (dumped as ``!unsafe``)."""


class _VarsDumper(yaml.SafeDumper):
    """YAML for ``env/extravars``: plain data, and :class:`_Unsafe` text as ``!unsafe``."""


_VarsDumper.add_representer(_Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v), style='"'))


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes until ``deadline`` (monotonic), then :class:`TimeoutError`.

    A socket timeout bounds one ``recv`` only: a client that sends a byte every few seconds never trips it and
    holds a thread forever (slow loris). Here every ``recv`` waits at most what is left of one deadline for the
    whole request.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not complete within its deadline")
        self.sock.settimeout(left)
        return self.sock.recv_into(buf)


class Handler(BaseHTTPRequestHandler):
    server_version = "edge-alert-receiver"
    sys_version = ""
    #: deadline for the whole request -- line, headers and body (a client that drips bytes is cut off)
    timeout = READ_DEADLINE_S
    receiver: Receiver

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + self.timeout))

    def log_message(self, format: str, *args: Any) -> None:
        log("http", client=self.client_address[0], line=format % args)

    def _send(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guard(self, path: str) -> None:
        if self.path != path:
            raise Refused(404, "not found")
        if not self.receiver.authorised(self.headers.get("Authorization")):
            raise Refused(401, "missing or wrong bearer token")

    def do_GET(self) -> None:
        try:
            self._guard("/status")
        except Refused as exc:
            self._send(exc.status, {"error": exc.reason})
            return
        with self.receiver.lock:
            runs = [dict(r) for r in self.receiver.runs]
        self._send(200, {"runs": runs})

    def do_POST(self) -> None:
        try:
            self._guard("/alerts")
            if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
                raise Refused(415, "Content-Type must be application/json")
            length = self.headers.get("Content-Length")
            if length is None or not (length.isascii() and length.isdigit()):  # "²".isdigit(), but int("²") fails
                raise Refused(411, "a Content-Length is required")
            if int(length) > MAX_BODY:
                raise Refused(413, f"body larger than {MAX_BODY} bytes")
            body = self.rfile.read(int(length))
            if len(body) != int(length):
                raise Refused(400, "body shorter than its Content-Length")
            try:
                doc = json.loads(body, parse_constant=_no_constant)
            except (ValueError, RecursionError) as exc:
                raise Refused(400, f"not strict JSON: {str(exc)[:100]}") from None
            alerts = self.receiver.check(doc)
        except Refused as exc:
            log("refused", client=self.client_address[0], status=exc.status, reason=exc.reason)
            self._send(exc.status, {"error": exc.reason})
            return
        except OSError:  # a client that stalls past the deadline or hangs up
            self.close_connection = True
            return
        self._send(202, self.receiver.act(alerts))

    def do_PUT(self) -> None:
        self._send(405, {"error": "only POST /alerts and GET /status"})

    do_DELETE = do_PATCH = do_PUT


class Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once: a flood of connections is closed on
    arrival instead of growing threads (and memory) without bound. Alertmanager sends one request at a time per
    receiver and retries a refused one."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log("refused", client=str(client_address[0]), reason="too many connections")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9095", help="HOST:PORT to bind (default 127.0.0.1:9095)")
    ap.add_argument("--token-file", type=Path, required=True, help="the shared bearer token (mode 600)")
    ap.add_argument("--inventory", type=Path, default=REPO / "inventory" / "local")
    ap.add_argument("--models", type=Path, default=REPO / "models.yaml")
    ap.add_argument("--extra-vars-file", type=Path, help="JSON object of extra variables for rollback.yml")
    ap.add_argument("--data-dir", type=Path, default=REPO / ".state" / "alert-receiver",
                    help="ansible-runner's private data directories, one per run")
    ap.add_argument("--cooldown", type=float, default=600.0, help="seconds between two rollbacks of one group")
    ap.add_argument("--playbook-timeout", type=int, default=900, help="seconds one rollback run may take")
    ap.add_argument("--lock-wait", type=int, default=120, help="seconds to wait for the fleet lock")
    ap.add_argument("--read-timeout", type=float, default=READ_DEADLINE_S,
                    help="seconds a client may take to send its request (line, headers, body)")
    a = ap.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    extravars = json.loads(a.extra_vars_file.read_text()) if a.extra_vars_file else {}
    if not isinstance(extravars, dict):
        raise SystemExit(f"alert_receiver: {a.extra_vars_file} must hold a JSON object")
    receiver = Receiver(token=read_token(a.token_file), inventory=a.inventory, models=a.models,
                        extravars=extravars, data_dir=a.data_dir, cooldown_s=a.cooldown,
                        playbook_timeout_s=a.playbook_timeout, lock_wait_s=a.lock_wait)
    Handler.receiver = receiver
    Handler.timeout = a.read_timeout
    server = Server((host, int(port)), Handler)
    log("listening", address=f"{host}:{server.server_address[1]}", devices=len(receiver.devices),
        groups=receiver.rollout_groups)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        receiver.jobs.put(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
