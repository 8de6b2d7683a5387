#!/usr/bin/env bash
# Installs the Debian packages the tests use (system-packages.txt), when root and when they are missing.
# Not root: prints what is missing; the tests that need a package skip with a clear reason.
# Offline but for the package registries is enough (apt mirrors). Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' system-packages.txt | awk '{print $1}')
missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system-deps: all ${#wanted[@]} Debian packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root, not installing: ${missing[*]} (tests that need them skip, saying so)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "system-deps: no apt-get on this machine, not installing: ${missing[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package lists older than a day (or none) are refreshed first; a failed refresh is not fatal if lists exist.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null)" ]; then
  timeout 300 apt-get update -q -o DPkg::Lock::Timeout=600 || echo "system-deps: apt-get update failed, trying the existing lists" >&2
fi
# --no-install-recommends keeps chromium and prometheus small; no service is started by these packages'
# use here (the tests start their own daemons on 127.0.0.1).
timeout 900 apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
