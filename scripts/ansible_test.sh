#!/usr/bin/env bash
# ansible-test for the edgeml.fleet collection, offline: `scripts/ansible_test.sh sanity [options]`,
# `scripts/ansible_test.sh units [options]`.
#
# ansible-test creates its own virtual environments (one per sanity test) and bootstraps pip into each
# with a script it downloads from ci-files.testing.ansible.com, which is not reachable here. It uses a
# cached copy at ~/.ansible/test/cache/get_pip_<pip version>.py when there is one: this script points
# HOME at an isolated directory (ANSIBLE_TEST_HOME, default ~/.cache/edgeml/ansible-test-home, kept across
# clones so CI pays the environment set-up once per machine; the user's own
# ~/.ansible is never touched) and puts scripts/ansible_test_get_pip.py there under that name. The
# packages the environments need still come from the package index (pip), which is reachable.
# The environments are kept between runs: the first run of a test takes minutes, later runs seconds.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
COLLECTION="$REPO/collections/ansible_collections/edgeml/fleet"
export HOME="${ANSIBLE_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeml/ansible-test-home}"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
PIP_VERSION="$("$PY" -c '
from ansible_test._internal.python_requirements import get_venv_packages
class P: version = "'"$PYVER"'"
print(get_venv_packages(P())["pip"])')"
mkdir -p "$HOME/.ansible/test/cache"
cp "$REPO/scripts/ansible_test_get_pip.py" "$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
cd "$COLLECTION"
export PATH="$(dirname "$PY"):$PATH"
exec "$(dirname "$PY")/ansible-test" "$@" --python "$PYVER" --color no
