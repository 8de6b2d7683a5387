"""Install a bundle file up to and including activation, exactly as ``Device._install_file`` does.

The smoke tests are left out (a benchmark's fake model cannot pass them): the one on the staged
version before the swap and the post-activation check after it, each in its own child process (goal 5
measures those). So this replays the installer's public pieces in its order: open → ``BundleStream`` →
``verify_envelope`` → install policy → ``Device._stage`` (stream, hash, write, fsync, read-only, rename)
→ ``swap_symlink``, with the same ``state.json`` phase saves around the swap. Nothing is added to
``edge_runtime``.

As a script (``python bench/install_driver.py ROOT BUNDLE``) it runs one install in a fresh process
and prints one JSON line; the parent reads the child's peak RSS with ``os.wait4``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from edge_runtime._fsutil import swap_symlink
from edge_runtime.bundle import BundleStream
from edge_runtime.device import Device
from edge_runtime.manifest import Manifest
from edge_runtime.trust import check_install_policy, verify_envelope


def install_to_activation(dev: Device, bundle: Path) -> Manifest:
    """verify → stage → activate ``bundle`` on ``dev`` (no smoke test, no commit)."""
    cfg = dev.config
    policy = dev.trust_policy()
    with dev.lock.hold("install"), bundle.open("rb") as fh:
        stream = BundleStream(fh)
        manifest = verify_envelope(stream.envelope, policy)
        state = dev.store.load(manifest.name)
        check_install_policy(manifest, dev._context(state, None, cfg), allow_quarantined=False)
        dev._stage(state, manifest, stream)
        # Device._activate_and_test up to the smoke test
        assert state.pending is not None
        state.pending.phase = "activating"
        dev.store.save(state)
        swap_symlink(dev.active_link(manifest.name), f"versions/{manifest.version}")
        state.pending.phase = "activated"
        dev.store.save(state)
    return manifest


def main(argv: list[str]) -> int:
    root, bundle = Path(argv[0]), Path(argv[1])
    t0 = time.perf_counter()
    m = install_to_activation(Device(root), bundle)
    elapsed = time.perf_counter() - t0
    link = Device(root).active_link(m.name)
    out = {
        "model": m.name,
        "version": str(m.version),
        "bytes": m.total_length,
        "seconds": elapsed,
        "active": str(link.readlink()),
        # the child's own view, as a cross-check of the parent's wait4 figure (KiB on Linux)
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
