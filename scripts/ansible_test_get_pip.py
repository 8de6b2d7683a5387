"""Offline stand-in for ansible-test's pip bootstrap script (get-pip-<version>.py).

ansible-test bootstraps pip into each of its sanity/units virtual environments by downloading
https://ci-files.testing.ansible.com/ansible-test/get-pip-<version>.py, which this machine cannot reach.
It uses a cached copy at ``~/.ansible/test/cache/get_pip_<version>.py`` when one exists;
``scripts/ansible_test.sh`` puts this file there (under an isolated HOME). It does what get-pip does with
the arguments ansible-test passes (``pip==<version>`` plus pip options, ``--no-setuptools``, ``--no-wheel``):
pip from the interpreter's own ``ensurepip``, then ``pip install`` of the requested packages from the
package index (which is reachable), so the environment ends up with the exact pip ansible-test pins.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel", "--no-pip"}


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in GET_PIP_ONLY]
    # ensurepip in a child: in-process, it sets PIP_CONFIG_FILE=/dev/null in os.environ (on purpose, for its
    # own offline install), which would hide the machine's pip configuration (index, certificates) below.
    rc = subprocess.call([sys.executable, "-m", "ensurepip", "--upgrade"])
    if rc:
        return rc
    return subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
