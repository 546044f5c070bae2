#!/usr/bin/env bash
# Install refmount and what it needs on Debian (run as root): FUSE, a compiler for pyfuse3, and a
# virtualenv in .venv. With --test, also the test and benchmark servers. Safe to run again.
# pyfuse3 is built from its PyPI sdist with patches/pyfuse3-3.5.0.patch (see patches/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

packages=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv attr patch)
# Tests also start real servers: PostgreSQL for the shared registry; systemd-analyze checks the units.
# nginx serves HTTP references; npm installs Azurite (Azure Blob emulator).
if [ "$want_tests" = 1 ]; then
  packages+=(postgresql systemd nginx openssl graphviz)
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

# pyfuse3 with the patch: built once, against this machine's libfuse headers, before refmount's own install
# (which then finds pyfuse3>=3.5,<3.6 satisfied and leaves it alone, and adds trio). The local version
# label marks the build in `pip list`.
pyfuse3_version=3.5.0
pyfuse3_sdist_sha256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
pyfuse3_build="$pyfuse3_version+refmount2"  # raised with every change of the patch: an older build is rebuilt
pyfuse3_patched() {
  .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("pyfuse3") != sys.argv[1])' \
    "$pyfuse3_build" 2>/dev/null
}
if ! pyfuse3_patched; then
  echo "setup: building pyfuse3 $pyfuse3_version with patches/pyfuse3-$pyfuse3_version.patch" >&2
  build_dir=$(mktemp -d)
  trap 'rm -rf "$build_dir"' EXIT
  .venv/bin/python -m pip download -q --no-binary :all: --no-deps -d "$build_dir" "pyfuse3==$pyfuse3_version"
  echo "$pyfuse3_sdist_sha256  $build_dir/pyfuse3-$pyfuse3_version.tar.gz" | sha256sum --check --quiet
  tar -xzf "$build_dir/pyfuse3-$pyfuse3_version.tar.gz" -C "$build_dir" --no-same-owner
  src="$build_dir/pyfuse3-$pyfuse3_version"
  patch -p1 -s -d "$src" < "patches/pyfuse3-$pyfuse3_version.patch"
  rm "$src/src/pyfuse3/__init__.c"  # generated from the unpatched .pyx: Cython must regenerate it
  SETUPTOOLS_SCM_PRETEND_VERSION_FOR_PYFUSE3="$pyfuse3_build" \
    .venv/bin/python -m pip install -q --no-deps --force-reinstall "$src"
  rm -rf "$build_dir"
  trap - EXIT
fi

if [ "$want_tests" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
pyfuse3_patched || { echo "setup: pyfuse3 in .venv is not the patched build $pyfuse3_build (see patches/README.md)" >&2; exit 1; }
if [ "$want_tests" = 1 ] && [ ! -x /opt/refmount-test/azurite/node_modules/.bin/azurite-blob ]; then
  echo "setup: installing Azurite 3.35 in /opt/refmount-test/azurite" >&2
  npm install --silent --no-audit --no-fund --prefix /opt/refmount-test/azurite azurite@3.35 >/dev/null
fi
ln -sf "$(pwd)/.venv/bin/refmount" /usr/local/bin/refmount  # the path systemd units use
ln -sf "$(pwd)/.venv/bin/mount.fuse.refmount" /sbin/mount.fuse.refmount  # mount -t fuse.refmount, fstab
echo "setup: refmount installed in $(pwd)/.venv ($(.venv/bin/refmount --version))" >&2
