"""SSH test fleet: N simulated edge devices, each a network namespace with its own sshd, on this machine.

    scripts/ssh_fleet.py up N [--state DIR] [--name PREFIX] [--subnet CIDR] [--venv-hosts K] [--json]
    scripts/ssh_fleet.py status [--state DIR] [--json]
    scripts/ssh_fleet.py down [--state DIR]
    (make fleet-up N=20 / make fleet-status / make fleet-down)

Needs root and Debian's openssh-server (``make system-deps``). What ``up`` builds:

* a controller namespace ``<prefix>-ctl`` holding a bridge, with no default route; one network namespace per
  device (``<prefix>-<host>``) with a veth pair to that bridge and no route beyond it;
* one veth pair from this (root) namespace into the bridge, with an on-link route to the fleet subnet only:
  ansible-playbook, pytest, molecule and the benchmarks run here unchanged (see "Why a veth" below);
* per device, started with ``ip netns exec <ns> unshare --mount --uts``: its own hostname; its device root (a
  small tmpfs of ``--disk-mb``, so a full disk can be simulated) bind-mounted at ``/var/lib/edge-runtime``; an
  empty home bind-mounted at ``/root``; ``/opt/edge-runtime/venv`` a read-only bind of one shared runtime image
  (a venv built once from a wheelhouse, like a device image) or, for ``--venv-hosts``, a writable empty
  ``/opt/edge-runtime`` that the ``edge_runtime`` role's venv method fills from the controller's wheelhouse;
  its own sshd (``KexAlgorithms curve25519-sha256``, key login only, a host key made on the spot);
* a client key, a known_hosts file with every device's host key (host key checking stays on) and an Ansible
  inventory in the layout of ``inventory/production.example/`` (``<state>/inventory``), groups as in
  ``models.yaml`` (line_a, line_b, lab under edge_devices).

Everything created is recorded in ``<state>/fleet.json`` *before* it is created, so ``down`` removes all of it
after an interrupted ``up`` too (sshd and every other process in a device namespace, namespaces, the root
veth, tmpfs mounts, SSH control masters under ``<state>/cp``), and a second ``down`` does nothing.

Why a veth from the root namespace and not ``ip netns exec <ctl> ansible-playbook``: every controller-side tool
(ansible-runner inside pytest, Molecule whose create/destroy steps call this script, the benchmark measuring
the controller's memory, pip building the wheelhouse from the package registry) runs unchanged, and ``ip netns
exec`` would give each a private mount namespace in which namespaces made by a nested ``up`` are invisible to
everyone else. No test traffic leaves the machine all the same: devices have no route but their /16 on the
bridge (no default route, no gateway), the bridge namespace has none either, and the root side only gets an
on-link route to the fleet subnet, which ``up`` refuses to use when it overlaps a route this machine has.

Fault injection (``Fleet`` methods, used by tests/ssh and bench/ssh_fleet.py): link down/up/flap, a tbf rate
limit, random loss (nft ``numgen random``), sshd killed, power cut (every process of the device killed, then
the device restarted: boot recovery, then sshd), a full disk (a filler file on the device's tmpfs) and a
device clock offset (libfaketime preloaded into the device's SSH sessions with sshd's ``SetEnv``; the host
clock is never touched). The kernel here has no netem: no delay or loss qdisc is used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STATE = REPO / ".state" / "ssh-fleet"
DEFAULT_IMAGE_CACHE = REPO / ".state" / "ssh-fleet-image"
DEFAULT_TRUSTED_KEY = REPO / ".state" / "demo-keys" / "demo-NOT-FOR-PRODUCTION.pub"  # made by make validate
ROLE_DEFAULTS = REPO / "collections/ansible_collections/edgeml/fleet/roles/edge_runtime/defaults/main.yml"
DEVICE_ROOT = "/var/lib/edge-runtime"  # edge_runtime_root on every device
DEVICE_OPT = "/opt/edge-runtime"
DEVICE_VENV = f"{DEVICE_OPT}/venv"
SYSTEM_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
GROUPS = (("line_a", "a", 5), ("line_b", "b", 4), ("lab", "l", 3))  # as inventory/local: 5:4:3
STATE_NAME = "fleet.json"
SCHEMA = 1
UP_TIMEOUT_S = 30.0
ALLOC_LOCK = "/run/lock/edge-ssh-fleet.lock"


class FleetError(RuntimeError):
    """A fleet operation that cannot be done; the message says what and how to fix it."""


# --------------------------------------------------------------------------------------------- helpers


def run(argv: list[str], *, check: bool = True, timeout: float = 60, input_text: str | None = None) -> str:
    """Run a command; a failure raises FleetError with the command and its stderr."""
    try:
        proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FleetError(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise FleetError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def prerequisites() -> str | None:
    """None when this machine can run a fleet, else the reason (for a test's skip message)."""
    if os.geteuid() != 0:
        return "the SSH fleet needs root (network namespaces, bridges, mounts); CI runs as root"
    for tool, package in ((SSHD, "openssh-server"), ("/usr/bin/ssh-keygen", "openssh-client"),
                          ("/usr/sbin/nft", "nftables"), ("/usr/sbin/ip", "iproute2"),
                          ("/usr/bin/unshare", "util-linux")):
        if not Path(tool).exists():
            return f"{tool} is missing: install Debian's {package} (make system-deps, as root)"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode:
        return f"this machine does not allow network/mount namespaces: {probe.stderr.decode().strip()}"
    return None


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def host_names(n: int) -> list[tuple[str, str]]:
    """(host, group) for n devices, split over the models.yaml groups 5:4:3 (every group gets one from n=3)."""
    if n < 1:
        raise FleetError(f"a fleet needs at least 1 device, got {n}")
    weights = sum(w for _g, _s, w in GROUPS)
    counts = [n * w // weights for _g, _s, w in GROUPS]
    i = 0
    while sum(counts) < n:  # the remainder: first to empty groups, then in order
        empty = [k for k, c in enumerate(counts) if c == 0]
        counts[empty[0] if empty else i % len(GROUPS)] += 1
        i += 1
    width = max(2, len(str(max(counts))))
    out: list[tuple[str, str]] = []
    for (group, short, _w), count in zip(GROUPS, counts, strict=True):
        out.extend((f"ssh-{short}{k:0{width}d}", group) for k in range(1, count + 1))
    return out


def _tree_key(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def image_key() -> str:
    """What the shared runtime image is built from: pyproject.toml and the runtime's sources."""
    sources = sorted(p for p in (REPO / "edge_runtime").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    files = [REPO / "pyproject.toml", *([ROLE_DEFAULTS] if ROLE_DEFAULTS.exists() else []), *sources]
    return _tree_key(files)


def runtime_extras() -> list[str]:
    """The extras the edge_runtime role installs (its default ``edge_runtime_extras``): the image gets the same."""
    import yaml

    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text()) if ROLE_DEFAULTS.exists() else {}
    extras = defaults.get("edge_runtime_extras") or ["litert"]
    return [str(e) for e in extras]


def build_wheelhouse(dest: Path, python: str = sys.executable) -> Path:
    """``pip wheel`` of this project with the role's extras into ``dest`` (registry or pip's cache), once."""
    if not any(dest.glob("edge_runtime-*.whl")):
        dest.mkdir(parents=True, exist_ok=True)
        run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(dest),
             f"{REPO}[{','.join(runtime_extras())}]"], timeout=900)
    return dest


def build_image(cache: Path = DEFAULT_IMAGE_CACHE, log: Callable[[str], None] = print) -> Path:
    """The shared read-only runtime image: a venv made at /opt/edge-runtime/venv from a wheelhouse, offline.

    Built inside a private mount namespace where the cache directory is mounted at /opt/edge-runtime/venv,
    so the venv's paths (shebangs, pyvenv.cfg) are those devices see; this machine's /opt is not touched.
    Reused while pyproject.toml and edge_runtime/ are unchanged (the directory name is their hash).
    """
    key = image_key()
    image = cache / key
    venv = image / "venv"
    if (image / ".complete").exists():
        return venv
    log(f"building the shared runtime image {image} (once per runtime source; ~1 min)")
    wheelhouse = build_wheelhouse(cache / f"wheelhouse-{key}")
    if venv.exists():
        shutil.rmtree(venv)
    venv.mkdir(parents=True)
    extras = ",".join(runtime_extras())
    script = (
        "set -e\n"
        "mount -t tmpfs -o size=1m,mode=0755 edge-opt /opt\n"
        f"mkdir -p {DEVICE_VENV}\n"
        f'mount --bind "$1" {DEVICE_VENV}\n'
        f"{SYSTEM_PYTHON} -m venv {DEVICE_VENV}\n"
        f'PIP_CONFIG_FILE=/dev/null {DEVICE_VENV}/bin/python -m pip install --quiet --isolated --no-index '
        f'--disable-pip-version-check --find-links "$2" "edge-runtime[{extras}]"\n'
        f"{DEVICE_VENV}/bin/python -m compileall -q {DEVICE_VENV}/lib >/dev/null\n"
    )
    run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", str(venv),
         str(wheelhouse)], timeout=900)
    (image / ".complete").write_text(key + "\n")
    prune_images(cache, keep={key})
    return venv


def prune_images(cache: Path, keep: set[str], newest: int = 2) -> None:
    """Remove the images (and wheelhouses) of older runtime sources: all but ``keep`` and the newest ones.

    An image is ~200-350 MB; a fleet still running on a removed image would lose its runtime, so the newest
    ``newest`` stay (a test session and a benchmark built moments apart).
    """
    images = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("wheelhouse-")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in images[newest:]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(cache / f"wheelhouse-{old.name}", ignore_errors=True)


# --------------------------------------------------------------------------------------------- state


#: longest control socket directory: 107 bytes of a Unix socket path - "/" - 40 (%C) - ".<16 random>"
CONTROL_DIR_MAX = 49

@dataclass
class Device:
    host: str
    group: str
    index: int
    ip: str
    netns: str
    veth: str  # controller-side end, in the controller namespace
    venv_method: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Fleet:
    """A fleet described by ``<state>/fleet.json``; methods to bring it up, inject faults and tear it down."""

    def __init__(self, state: Path) -> None:
        self.state = state.resolve()
        self.record: dict[str, Any] = {}
        if (self.state / STATE_NAME).exists():
            self.record = json.loads((self.state / STATE_NAME).read_text())
        self._flappers: dict[str, threading.Event] = {}

    # ---- record
    def _save(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state / STATE_NAME, json.dumps(self.record, indent=1) + "\n")

    def _note(self, kind: str, value: Any) -> None:
        """Record a resource before it is created (teardown removes what is listed, present or not)."""
        self.record.setdefault("created", {}).setdefault(kind, [])
        if value not in self.record["created"][kind]:
            self.record["created"][kind].append(value)
            self._save()

    @property
    def devices(self) -> list[Device]:
        return [Device(**d) for d in self.record.get("devices", [])]

    def device(self, host: str) -> Device:
        for d in self.devices:
            if d.host == host:
                return d
        raise FleetError(f"no device {host!r} in {self.state / STATE_NAME}")

    @property
    def prefix(self) -> str:
        return str(self.record["prefix"])

    @property
    def ctl(self) -> str:
        return f"{self.prefix}-ctl"

    @property
    def inventory(self) -> Path:
        return self.state / "inventory"

    @property
    def key(self) -> Path:
        return self.state / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    @property
    def control_dir(self) -> Path:
        """Where the SSH control sockets live: ``<state>/cp``, or a short directory under /tmp when that path is
        too long for a socket. ssh binds ``<dir>/<%C: 40 hex>.<16 random>`` first, and a Unix socket path holds
        at most 107 bytes, so the directory may have at most 49 (a deep pytest tmp dir has more)."""
        local = self.state / "cp"
        if len(os.fsencode(local)) <= CONTROL_DIR_MAX:
            return local
        digest = hashlib.sha256(os.fsencode(self.state.resolve())).hexdigest()[:16]
        return Path("/tmp") / f"edge-ssh-cp-{digest}"  # noqa: S108 - checked private by _make_control_dir

    def _make_control_dir(self) -> None:
        """Create the control socket directory, mode 0700; refuse one that is not ours (a shared /tmp)."""
        d = self.control_dir
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        st = os.lstat(d)
        if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise SystemExit(f"ssh_fleet: {d} exists but is not a private directory of this user (mode 0700): "
                             "remove it and run again")

    def dev_dir(self, host: str) -> Path:
        return self.state / "devices" / host

    def root(self, host: str) -> Path:
        """The device's root (edge_runtime_root) as this machine sees it."""
        return self.dev_dir(host) / "root"

    def home(self, host: str) -> Path:
        return self.dev_dir(host) / "home"

    # ---- up
    def up(self, n: int, *, prefix: str | None = "ef", subnet: str | None = "10.213.0.0/16", venv_hosts: int = 0,
           disk_mb: int = 64, image: Path | None = None, trusted_key: Path | None = None,
           control_persist: str = "15s", log: Callable[[str], None] = print) -> None:
        """Bring up ``n`` devices. ``prefix`` / ``subnet`` None: the first free ones (a prefix from this process
        id, a 10.x.0.0/16 that no route of this machine overlaps), chosen under a machine-wide lock, so test
        sessions and benchmarks running at the same time never share names or addresses."""
        if self.record.get("devices"):
            raise FleetError(f"a fleet is already up in {self.state} (scripts/ssh_fleet.py down --state {self.state})")
        reason = prerequisites()
        if reason:
            raise FleetError(reason)
        for private in ("/root", "/var/lib", "/opt"):  # each device mounts its own over these
            if self.state == Path(private) or Path(private) in self.state.parents:
                raise FleetError(f"the fleet's state directory {self.state} is under {private}, which every device "
                                 "replaces with its own: its sshd could not read its keys; pick another --state")
        if prefix is not None and (not prefix.isalnum() or len(prefix) > 6):
            raise FleetError(f"--name must be 1-6 letters or digits (it prefixes interface names), got {prefix!r}")
        hosts = host_names(n)
        # the image first: it may take minutes, and no name or address is held meanwhile
        venv_image = image or (build_image(log=log) if venv_hosts < n else None)
        # the wheelhouse the role copies to venv-method devices: the one the image is built from
        wheelhouse = build_wheelhouse(DEFAULT_IMAGE_CACHE / f"wheelhouse-{image_key()}") if venv_hosts else None
        t0 = time.monotonic()
        with _allocation_lock():
            prefix = prefix or _free_prefix()
            net = ipaddress.ip_network(subnet) if subnet else _free_subnet()
            if net.version != 4 or net.prefixlen > 22:
                raise FleetError(f"--subnet must be an IPv4 network of /22 or larger, got {subnet}")
            if f"{prefix}-ctl" in run(["ip", "netns", "list"], check=False).split():
                raise FleetError(f"namespace {prefix}-ctl exists: another fleet uses the name {prefix}; pick another "
                                 "--name, or `down` that fleet")
            self._refuse_overlap(net)
            if n > (net.num_addresses // 256 - 1) * 250:
                raise FleetError(f"{n} devices do not fit in {net}")
            self.record = {"schema": SCHEMA, "prefix": prefix, "subnet": str(net), "devices": [], "created": {}}
            self.state.mkdir(parents=True, exist_ok=True)
            self._save()
            base = int(net.network_address)
            ctl_ip = str(ipaddress.ip_address(base + 1))
            devices = [
                Device(host=h, group=g, index=i,
                       ip=str(ipaddress.ip_address(base + 256 * (1 + i // 250) + 1 + i % 250)),
                       netns=f"{prefix}-{h}", veth=f"{prefix}v{i}", venv_method=i < venv_hosts)
                for i, (h, g) in enumerate(hosts)
            ]
            self.record.update(controller_ip=ctl_ip, image=str(venv_image) if venv_image else None,
                               wheelhouse=str(wheelhouse) if wheelhouse else None,
                               devices=[d.as_dict() for d in devices], disk_mb=disk_mb,
                               trusted_key=str(trusted_key or DEFAULT_TRUSTED_KEY),
                               control_persist=control_persist)
            self._save()
            log(f"bringing up {n} SSH devices in {self.state} (namespaces {prefix}-*, subnet {net})")
            self._keys(devices)
            self._network(net, ctl_ip, devices)  # the subnet's route exists from here: the lock can go
        for d in devices:
            self._prepare_device(d, disk_mb)
        for d in devices:
            self.start(d.host)
        self._wait_ready(devices)
        self._write_inventory()
        log(f"{n} devices up in {time.monotonic() - t0:.1f} s; inventory: {self.inventory}")

    def _refuse_overlap(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        for route, line in _routes():
            if route.overlaps(net):
                raise FleetError(f"subnet {net} overlaps a route of this machine ({line}); "
                                 "pick another with --subnet, or `down` the fleet that uses it")

    def _keys(self, devices: list[Device]) -> None:
        client = self.key.parent
        client.mkdir(parents=True, exist_ok=True)
        client.chmod(0o700)
        if not self.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ssh-fleet-controller", "-f", str(self.key)])
        write_atomic(self.state / "authorized_keys", self.key.with_suffix(".pub").read_text(), 0o644)
        lines = []
        for d in devices:
            dd = self.dev_dir(d.host)
            dd.mkdir(parents=True, exist_ok=True)
            hk = dd / "ssh_host_ed25519_key"
            if not hk.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", d.host, "-f", str(hk)])
            kind, blob = hk.with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{d.ip} {kind} {blob}\n")
        write_atomic(self.known_hosts, "".join(lines))
        self._make_control_dir()

    def _network(self, net: Any, ctl_ip: str, devices: list[Device]) -> None:
        p = self.prefix
        self._note("netns", self.ctl)
        run(["ip", "netns", "add", self.ctl])
        ipn = ["ip", "-n", self.ctl]
        run([*ipn, "link", "set", "lo", "up"])
        run([*ipn, "link", "add", "br0", "type", "bridge"])
        run([*ipn, "link", "set", "br0", "up"])
        # the controller's way in: a veth from this namespace into the bridge, an on-link route to the subnet only
        self._note("root_veth", f"{p}-root")
        run(["ip", "link", "add", f"{p}-root", "type", "veth", "peer", "name", f"{p}-br", "netns", self.ctl])
        run([*ipn, "link", "set", f"{p}-br", "master", "br0", "up"])
        run(["ip", "addr", "add", f"{ctl_ip}/{net.prefixlen}", "dev", f"{p}-root"])
        run(["ip", "link", "set", f"{p}-root", "up"])
        batch = []
        for d in devices:
            self._note("netns", d.netns)
            run(["ip", "netns", "add", d.netns])
            batch += [
                f"link add {d.veth} netns {self.ctl} type veth peer name eth0 netns {d.netns}",
            ]
        run(["ip", "-batch", "-"], input_text="\n".join(batch) + "\n", timeout=120)
        ctl_batch = [f"link set {d.veth} master br0 up" for d in devices]
        run([*ipn, "-batch", "-"], input_text="\n".join(ctl_batch) + "\n", timeout=120)
        for d in devices:
            ipd = ["ip", "-n", d.netns]
            run([*ipd, "-batch", "-"], input_text=(
                f"addr add {d.ip}/{net.prefixlen} dev eth0\nlink set eth0 up\nlink set lo up\n"))

    def _prepare_device(self, d: Device, disk_mb: int) -> None:
        dd = self.dev_dir(d.host)
        for sub in ("root", "home", "opt"):
            (dd / sub).mkdir(exist_ok=True)
        self._note("mounts", str(self.root(d.host)))
        if not os.path.ismount(self.root(d.host)):
            run(["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m,mode=0755", f"edge-dev-{d.host}",
                 str(self.root(d.host))])
        self.home(d.host).chmod(0o700)
        self._write_sshd_config(d, clock=None)

    def _write_sshd_config(self, d: Device, clock: str | None) -> None:
        dd = self.dev_dir(d.host)
        lines = [
            f"ListenAddress {d.ip}:22",
            f"HostKey {dd / 'ssh_host_ed25519_key'}",
            f"PidFile {dd / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.state / 'authorized_keys'}",
            "StrictModes no",  # the keys live under the fleet's state directory, not in the device's home
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # the default sntrup761x25519 exchange costs ~0.26 CPU-s per connection on this kind of machine
            "KexAlgorithms curve25519-sha256",
            "Subsystem sftp internal-sftp",
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
            "LogLevel ERROR",
        ]
        if clock:  # a device clock off by this much, in the device's sessions only (libfaketime)
            # The monotonic clock is shifted too: with FAKETIME_DONT_FAKE_MONOTONIC=1, libfaketime 0.9.10 turns
            # Python's time.sleep (clock_nanosleep on an absolute monotonic deadline) into EINVAL under a
            # negative offset -- an artefact of the simulator, not of a device. Intervals stay right.
            lines.append(f"SetEnv LD_PRELOAD={FAKETIME_LIB} FAKETIME={clock}")
        write_atomic(dd / "sshd_config", "\n".join(lines) + "\n")

    def _device_script(self, d: Device, boot_recover: bool) -> str:
        image = self.record.get("image")
        opt = (f'mount --bind "{self.dev_dir(d.host) / "opt"}" {DEVICE_OPT}\n' if d.venv_method else
               f"mkdir -p {DEVICE_VENV}\nmount --bind -o ro \"{image}\" {DEVICE_VENV}\n"
               f"mount -o remount,bind,ro {DEVICE_VENV}\n")
        recover = (f'if [ -x {DEVICE_VENV}/bin/edge-runtime ] && [ -f {DEVICE_ROOT}/config.json ]; then\n'
                   f'  timeout 120 {DEVICE_VENV}/bin/edge-runtime --root {DEVICE_ROOT} recover '
                   '>>"$1/boot.log" 2>&1 || echo "boot recovery failed: $?" >>"$1/boot.log"\nfi\n'
                   if boot_recover else "")
        return (
            "set -e\n"
            f"hostname {d.host}\n"
            # the device's own /var/lib (its runtime root only) and /opt (its runtime only)
            "mount -t tmpfs -o size=1m,mode=0755 edge-varlib /var/lib\n"
            f"mkdir -p {DEVICE_ROOT}\n"
            f'mount --bind "$1/root" {DEVICE_ROOT}\n'
            "mount -t tmpfs -o size=1m,mode=0755 edge-opt /opt\n"
            f"mkdir -p {DEVICE_OPT}\n"
            f"{opt}"
            'mount --bind "$1/home" /root\n'
            f"{recover}"
            f'exec {SSHD} -D -e -f "$1/sshd_config"\n'
        )

    def start(self, host: str, *, boot_recover: bool = False) -> None:
        """Start the device (its mount/UTS namespaces and sshd), after an optional boot recovery."""
        d = self.device(host)
        dd = self.dev_dir(host)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        log = (dd / "sshd.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", d.netns, "unshare", "--mount", "--uts", "--propagation", "private", "--",
             "/bin/sh", "-c", self._device_script(d, boot_recover), "sh", str(dd)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )
        log.close()
        (dd / "device.pid").write_text(f"{proc.pid}\n")

    def _wait_ready(self, devices: list[Device], timeout: float = UP_TIMEOUT_S) -> None:
        pending = {d.host: d for d in devices}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for host, d in list(pending.items()):
                with contextlib.suppress(OSError), socket.create_connection((d.ip, 22), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        del pending[host]
            if pending:
                time.sleep(0.1)
        if pending:
            tails = {h: (self.dev_dir(h) / "sshd.log").read_text(errors="replace")[-300:] for h in list(pending)[:3]}
            raise FleetError(f"sshd did not answer on {len(pending)} device(s) within {timeout:.0f} s: {tails}")

    def wait_ready(self, host: str, timeout: float = UP_TIMEOUT_S) -> None:
        self._wait_ready([self.device(host)], timeout)

    def _write_inventory(self) -> None:
        inv = self.inventory
        gv = inv / "group_vars" / "edge_devices"
        gv.mkdir(parents=True, exist_ok=True)
        groups: dict[str, dict[str, Any]] = {}
        for d in self.devices:
            hv: dict[str, Any] = {"ansible_host": d.ip}
            if d.venv_method:
                hv["edge_runtime_install_method"] = "venv"
            groups.setdefault(d.group, {})[d.host] = hv
        lines = ["---", "# Written by scripts/ssh_fleet.py up: the simulated SSH fleet (network namespaces on this",
                 "# machine). Layout of inventory/production.example/; groups match models.yaml.",
                 "edge_devices:", "  children:"]
        for group, hosts in groups.items():
            lines += [f"    {group}:", "      hosts:"]
            lines += [f"        {h}: {json.dumps(v)}" for h, v in hosts.items()]
        write_atomic(inv / "hosts.yml", "\n".join(lines) + "\n")
        persist = self.record.get("control_persist", "15s")
        write_atomic(gv / "connection.yml", f"""---
# Written by scripts/ssh_fleet.py. Devices are reached over SSH as root: the device namespaces share this
# machine's user database, so there is no per-device deploy user to sudo from and become does not apply
# (inventory/production.example logs in as `deploy` with become). Host keys are checked against the fleet's
# known_hosts (made by `up`); the client key never leaves the controller.
ansible_user: root
ansible_become: false
ansible_ssh_private_key_file: {self.key}
ansible_ssh_timeout: 5
# Fail fast when a device drops off the network (~8 s instead of ~40 s); one short-lived master per device,
# its socket under the fleet's state directory so that `down` closes it.
ansible_ssh_common_args: >-
  -o UserKnownHostsFile={self.known_hosts} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
  -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=5
  -o ServerAliveInterval=2 -o ServerAliveCountMax=3
  -o ControlMaster=auto -o ControlPersist={persist} -o ControlPath={self.control_dir}/%C
# Modules run with the runtime's own virtual environment (a shared read-only image, or the venv the
# edge_runtime role installs on the devices with edge_runtime_install_method: venv).
ansible_python_interpreter: {DEVICE_VENV}/bin/python
""")
        write_atomic(gv / "edge_runtime.yml", f"""---
# Written by scripts/ssh_fleet.py. The runtime is preinstalled (the shared image at {DEVICE_VENV}), except
# on hosts marked edge_runtime_install_method: venv in hosts.yml: the role installs it there from a
# wheelhouse built on the controller (the device has no network; pip runs with --no-index).
edge_runtime_install_method: preinstalled
edge_runtime_venv: {DEVICE_VENV}
edge_runtime_device_wheelhouse: {DEVICE_OPT}/wheelhouse
edge_runtime_wheelhouse: {self.record.get('wheelhouse') or '"{{ playbook_dir }}/../.state/wheelhouse"'}
edge_runtime_system_python: {SYSTEM_PYTHON}
edge_runtime_root: {DEVICE_ROOT}
edge_runtime_boot_recovery: none  # the simulator runs `edge-runtime recover` itself when a device restarts
edge_runtime_trusted_keys:
  - {self.record.get('trusted_key')}
# Bundles of a file registry are pushed over SSH before each install.
edge_model_transfer: auto
""")

    # ---- processes
    def pids(self, host: str) -> list[int]:
        """Every process in the device's network namespace."""
        out = run(["ip", "netns", "pids", self.device(host).netns], check=False)
        return [int(x) for x in out.split() if x.isdigit()]

    def _kill(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and _state(p) != "Z" for p in pids):
            time.sleep(0.02)
        _reap()

    def kill_sshd(self, host: str) -> None:
        """sshd dies on the device: the listener and every session sshd (the client's master breaks)."""
        self._kill([p for p in self.pids(host) if _comm(p) == "sshd"])

    def stop(self, host: str) -> None:
        """Power off: every process of the device is killed at once (SIGKILL)."""
        self._kill(self.pids(host))

    def power_cut(self, host: str, *, restart: bool = True) -> None:
        """Every process of the device killed at once, then the device boots: recovery, then sshd."""
        self.stop(host)
        if restart:
            self.start(host, boot_recover=True)
            self.wait_ready(host, timeout=150)

    def set_clock(self, host: str, offset: str | None) -> None:
        """The device's clock off by ``offset`` (libfaketime syntax, e.g. "+7300d", "-7300d"); None: correct.

        Only the device's SSH sessions (Ansible's modules and the runtime they start) see it: sshd's
        ``SetEnv`` preloads libfaketime into them; the device is restarted (sshd reads its config at start).
        """
        if offset and not Path(FAKETIME_LIB).exists():
            raise FleetError(f"{FAKETIME_LIB} is missing: install Debian's faketime (make system-deps)")
        self._write_sshd_config(self.device(host), clock=offset)
        self.stop(host)
        self.start(host)
        self.wait_ready(host)

    # ---- links
    def link(self, host: str, up: bool) -> None:
        run(["ip", "-n", self.ctl, "link", "set", self.device(host).veth, "up" if up else "down"])

    def flap(self, host: str, down_s: float = 1.0, up_s: float = 2.0) -> None:
        """Toggle the device's link until unflap(host)."""
        stop = threading.Event()
        self._flappers[host] = stop

        def loop() -> None:
            while not stop.is_set():
                self.link(host, False)
                stop.wait(down_s)
                self.link(host, True)
                stop.wait(up_s)
            self.link(host, True)

        threading.Thread(target=loop, name=f"flap-{host}", daemon=True).start()

    def unflap(self, host: str) -> None:
        stop = self._flappers.pop(host, None)
        if stop:
            stop.set()
            time.sleep(0.05)
        self.link(host, True)

    def rate(self, host: str, kbit: int | None) -> None:
        """A tbf rate limit on the device's link, both directions; None removes it."""
        d = self.device(host)
        for ns, dev in ((self.ctl, d.veth), (d.netns, "eth0")):
            if kbit is None:
                run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)
            else:
                # tbf drops a packet larger than its bucket: the burst must hold full frames (MTU 1500)
                burst = max(32, kbit // 8)  # kbit: 4 KB at least, ~125 ms of the rate above that
                run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{kbit}kbit",
                     "burst", f"{burst}kbit", "latency", "500ms"])

    def loss(self, host: str, percent: float | None) -> None:
        """Drop this share of the device's packets at random, both directions (nft numgen); None removes it."""
        ns = self.device(host).netns
        run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "edgefault"], check=False)
        if percent:
            per_mille = round(percent * 10)
            rules = (
                "table inet edgefault {\n"
                f"  chain in {{ type filter hook input priority 0; numgen random mod 1000 < {per_mille} drop; }}\n"
                f"  chain out {{ type filter hook output priority 0; numgen random mod 1000 < {per_mille} drop; }}\n"
                "}\n"
            )
            run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input_text=rules)

    # ---- disk
    def fill_disk(self, host: str, leave_kib: int = 16) -> None:
        """Fill the device's root filesystem but ``leave_kib``: what is installed stays, nothing new fits."""
        st = os.statvfs(self.root(host))
        free = st.f_bavail * st.f_frsize
        filler = self.root(host) / ".filler"
        with filler.open("ab") as f:
            size = f.tell() + max(0, free - leave_kib * 1024)
            os.posix_fallocate(f.fileno(), 0, size) if size else None

    def free_disk(self, host: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root(host) / ".filler").unlink()

    def clear_faults(self, host: str) -> None:
        """Every fault of the device removed: link up, no rate limit or loss, disk freed, clock right, sshd up."""
        self.unflap(host)
        self.rate(host, None)
        self.loss(host, None)
        self.free_disk(host)
        if "FAKETIME" in (self.dev_dir(host) / "sshd_config").read_text():
            self.set_clock(host, None)
        if not any(_comm(p) == "sshd" for p in self.pids(host)):
            self.stop(host)
            self.start(host, boot_recover=True)
            self.wait_ready(host, timeout=150)

    # ---- status / down
    def status(self) -> dict[str, Any]:
        existing = set(run(["ip", "netns", "list"], check=False).split())
        rows = []
        for d in self.devices:
            sshd = [p for p in self.pids(d.host) if _comm(p) == "sshd"] if d.netns in existing else []
            rows.append({"host": d.host, "group": d.group, "ip": d.ip, "netns": d.netns in existing,
                         "sshd": bool(sshd), "runtime": "venv" if d.venv_method else "image"})
        return {"state": str(self.state), "prefix": self.record.get("prefix"), "subnet": self.record.get("subnet"),
                "inventory": str(self.inventory) if self.record else None, "devices": rows,
                "up": sum(1 for r in rows if r["sshd"]), "total": len(rows)}

    def close_masters(self) -> None:
        """Close the SSH control masters of this fleet (they outlive a run by ControlPersist)."""
        if not self.control_dir.exists():
            return
        for sock in self.control_dir.iterdir():
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "fleet-device"],
                           capture_output=True, timeout=10, check=False)
        # a master whose device vanished does not answer -O exit: kill the ssh processes using our sockets
        needle = str(self.control_dir).encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    cmd = (proc / "cmdline").read_bytes()
                    if cmd.startswith(b"ssh\0") and needle in cmd:
                        os.kill(int(proc.name), signal.SIGKILL)
        for sock in self.control_dir.iterdir():
            with contextlib.suppress(OSError):
                sock.unlink()

    def down(self, log: Callable[[str], None] = print) -> None:
        """Remove everything the record lists; safe to repeat and after an interrupted ``up``."""
        if not self.record:
            log(f"no fleet in {self.state}")
            return
        for stop in self._flappers.values():
            stop.set()
        created = self.record.get("created", {})
        self.close_masters()
        existing = set(run(["ip", "netns", "list"], check=False).split())
        for ns in created.get("netns", []):
            if ns in existing:
                self._kill([int(x) for x in run(["ip", "netns", "pids", ns], check=False).split() if x.isdigit()])
                run(["ip", "netns", "del", ns], check=False)
        for veth in created.get("root_veth", []):
            run(["ip", "link", "del", veth], check=False)
        for mount in created.get("mounts", []):
            if os.path.ismount(mount):
                run(["umount", "-l", mount], check=False)
        n = len(self.record.get("devices", []))
        for sub in ("devices", "inventory", "cp", "client"):
            shutil.rmtree(self.state / sub, ignore_errors=True)
        shutil.rmtree(self.control_dir, ignore_errors=True)  # the short /tmp one, when the state path is long
        for f in ("known_hosts", "authorized_keys", STATE_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.state / f).unlink()
        self.record = {}
        log(f"fleet of {n} devices in {self.state} removed")

    def watch(self, condition: Callable[[], bool], action: Callable[[], None], *, timeout: float,
              every: float = 0.02) -> threading.Thread:
        """Run ``action`` once, as soon as ``condition()`` holds (polled), in a thread; gives up after timeout."""
        def loop() -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError):  # a file half there, gone, or not JSON yet
                    if condition():
                        action()
                        return
                time.sleep(every)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Machine-wide: one fleet at a time picks its names and subnet and creates its route."""
    import fcntl

    Path(ALLOC_LOCK).parent.mkdir(parents=True, exist_ok=True)
    with open(ALLOC_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_prefix() -> str:
    taken = {ns.split("-", 1)[0] for ns in run(["ip", "netns", "list"], check=False).split()}
    for k in range(os.getpid() % 99991, os.getpid() % 99991 + 99991):
        name = f"f{k % 99991}"
        if name not in taken:
            return name
    raise FleetError("no free namespace prefix")


def _routes() -> list[Any]:
    out = []
    for line in run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            continue
        with contextlib.suppress(ValueError):
            out.append((ipaddress.ip_network(word, strict=False), line.strip()))
    return out


def _free_subnet() -> Any:
    routes = _routes()
    for k in range(220, 255):
        net = ipaddress.ip_network(f"10.{k}.0.0/16")
        if not any(r.overlaps(net) for r, _line in routes):
            return net
    raise FleetError("no free 10.x.0.0/16 for a fleet (10.220-254 all routed); pass --subnet")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _reap() -> None:
    """Collect exited children of this process (device launchers started by start())."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"fleet directory (default {DEFAULT_STATE})")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="bring up N devices")
    u.add_argument("n", type=int)
    u.add_argument("--name", default="ef", help="prefix of namespaces and interfaces (1-6 letters/digits); "
                   "auto: a free one")
    u.add_argument("--subnet", default="10.213.0.0/16", help="auto: the first free 10.x.0.0/16 (x >= 220)")
    u.add_argument("--venv-hosts", type=int, default=0,
                   help="the first K devices get an empty /opt/edge-runtime: the edge_runtime role installs the "
                        "runtime there (venv method, offline); the others share the read-only image")
    u.add_argument("--disk-mb", type=int, default=64, help="size of each device's root filesystem (tmpfs)")
    u.add_argument("--trusted-key", type=Path, help="public key file the inventory trusts "
                   "(default .state/demo-keys/demo-NOT-FOR-PRODUCTION.pub, made by make validate / make demo)")
    u.add_argument("--control-persist", default="15s")
    sub.add_parser("down", help="tear the fleet down (also after an interrupted up; idempotent)")
    sub.add_parser("status", help="devices, namespaces and sshd")
    a = ap.parse_args(argv)
    fleet = Fleet(a.state)

    def quiet(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        if a.cmd == "up":
            try:
                fleet.up(a.n, prefix=None if a.name == "auto" else a.name,
                         subnet=None if a.subnet == "auto" else a.subnet, venv_hosts=a.venv_hosts, disk_mb=a.disk_mb,
                         trusted_key=a.trusted_key, control_persist=a.control_persist, log=quiet)
            except BaseException:
                if fleet.record and not fleet.record.get("keep_on_error"):
                    quiet("up failed: tearing down what was created")
                    fleet.down(log=quiet)
                raise
            st = fleet.status()
            print(json.dumps(st, indent=1) if a.json else
                  f"{st['up']}/{st['total']} devices up; ansible-playbook -i {st['inventory']} playbooks/deploy.yml")
        elif a.cmd == "down":
            fleet.down(log=quiet)
            if a.json:
                print(json.dumps({"state": str(fleet.state), "down": True}))
        else:
            st = fleet.status()
            if a.json:
                print(json.dumps(st, indent=1))
            elif not st["total"]:
                print(f"no fleet in {fleet.state}")
            else:
                print(f"{st['up']}/{st['total']} devices up, inventory {st['inventory']}")
                for r in st["devices"]:
                    print(f"  {r['host']:<10} {r['group']:<7} {r['ip']:<15} runtime={r['runtime']:<5} "
                          f"netns={'yes' if r['netns'] else 'NO'} sshd={'up' if r['sshd'] else 'DOWN'}")
    except FleetError as exc:
        print(f"ssh_fleet: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
