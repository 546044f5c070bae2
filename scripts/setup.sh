#!/usr/bin/env bash
# Install refmount and what it needs on Debian (run as root): FUSE, a compiler for pyfuse3, and a
# virtualenv in .venv. With --test, also the test and benchmark servers. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

packages=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv attr)
# Tests also start real servers: PostgreSQL for the shared registry; systemd-analyze checks the units.
# nginx serves HTTP references; npm installs Azurite (Azure Blob emulator).
if [ "$want_tests" = 1 ]; then
  packages+=(postgresql systemd nginx openssl)
  command -v npm >/dev/null || packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$want_tests" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
if [ "$want_tests" = 1 ] && [ ! -x /opt/refmount-test/azurite/node_modules/.bin/azurite-blob ]; then
  echo "setup: installing Azurite 3.35 in /opt/refmount-test/azurite" >&2
  npm install --silent --no-audit --no-fund --prefix /opt/refmount-test/azurite azurite@3.35 >/dev/null
fi
ln -sf "$(pwd)/.venv/bin/refmount" /usr/local/bin/refmount  # the path systemd units use
ln -sf "$(pwd)/.venv/bin/mount.fuse.refmount" /sbin/mount.fuse.refmount  # mount -t fuse.refmount, fstab
echo "setup: refmount installed in $(pwd)/.venv ($(.venv/bin/refmount --version))" >&2
