#!/usr/bin/env bash
# Build an aarch64 Debian root and install the edgecut agent in it, to run under qemu-user.
#
#   sudo deploy/arm64/build-root.sh ROOT WHEEL [MIRROR]
#
# ROOT   directory for the root (created; kept between runs: a finished step is not repeated)
# WHEEL  the edgecut wheel built on the host (`pip wheel --no-deps -w dist .`); pure Python
# MIRROR Debian mirror (default: the first deb.debian.org-style URI apt uses here)
#
# Needs root, debootstrap and qemu-user-static (Debian packages). Registers qemu's aarch64 handler in
# binfmt_misc with the F flag (the interpreter is opened now, so it works inside the chroot) when it
# is not registered yet. Prints one `== step` line per step and ends with the pip summary line.
# pip inside the root reads no host pip.conf: it installs aarch64 wheels from the index it reaches,
# and `--only-binary :all:` proves no compiler is needed (the root has none). A reused root keeps its
# dependencies (pip adds only missing ones) and gets this checkout's edgecut again, so a rerun costs
# seconds, not the ~70 s of a fresh install.
set -euo pipefail

ROOT=${1:?usage: build-root.sh ROOT WHEEL [MIRROR]}
WHEEL=${2:?usage: build-root.sh ROOT WHEEL [MIRROR]}
MIRROR=${3:-}
SUITE=${EDGECUT_ARM64_SUITE:-bookworm}
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "build-root.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
QEMU=$(command -v qemu-aarch64-static || true)
[ -n "$QEMU" ] || die "qemu-aarch64-static is missing: apt-get install qemu-user-static"
[ -f "$WHEEL" ] || die "wheel $WHEEL does not exist (pip wheel --no-deps -w dist .)"
if [ -z "$MIRROR" ]; then
  MIRROR=$( (grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null || true) | head -1 | awk '{print $2}')
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

echo "== binfmt_misc: aarch64 handler"
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT" \
  || die "cannot mount binfmt_misc (mount -t binfmt_misc binfmt_misc $BINFMT)"
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
  CONF=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$CONF" ] || die "$CONF is missing (qemu-user-static registers aarch64 there)"
  grep -q ':[A-Z]*F[A-Z]*$' "$CONF" || die "$CONF lacks the F flag: install qemu-user-static"
  cat "$CONF" > "$BINFMT/register"
fi
grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" \
  || die "the aarch64 binfmt handler has no F flag; remove it (echo -1 > $BINFMT/qemu-aarch64) and rerun"

if [ ! -e "$ROOT/.debootstrap-done" ]; then
  echo "== debootstrap $SUITE arm64 from $MIRROR into $ROOT"
  start=$(date +%s)
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,ca-certificates,libgomp1 "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; die "debootstrap failed (log: $ROOT.debootstrap.log)"; }
  echo "debootstrap took $(( $(date +%s) - start )) s"
  touch "$ROOT/.debootstrap-done"
fi

echo "== agent venv and pip install (aarch64 wheels only)"
cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf"
install -d "$ROOT/opt/wheels"
rm -f "$ROOT"/opt/wheels/edgecut-*.whl
cp "$WHEEL" "$ROOT/opt/wheels/"
WHEEL_IN=/opt/wheels/$(basename "$WHEEL")
# A host whose HTTPS goes through an inspecting proxy names its CA bundle in PIP_CERT: the root needs it too.
CERT_OPT=
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  cp -f "$PIP_CERT" "$ROOT/etc/ssl/certs/host-ca-bundle.crt"
  CERT_OPT="--cert /etc/ssl/certs/host-ca-bundle.crt"
fi
start=$(date +%s)
"$HERE/chroot-run.sh" "$ROOT" /bin/sh -ec "
  if command -v cc gcc >/dev/null 2>&1; then echo 'a compiler is installed in the root'; exit 1; fi
  [ -x /opt/edgecut/bin/python ] || python3 -m venv /opt/edgecut
  /opt/edgecut/bin/pip install $CERT_OPT --only-binary=:all: --no-cache-dir '$WHEEL_IN[agent]'
  /opt/edgecut/bin/pip install --no-deps --force-reinstall --no-cache-dir '$WHEEL_IN'
" >"$ROOT.pip.log" 2>&1 || { tail -20 "$ROOT.pip.log" >&2; die "pip install failed (log: $ROOT.pip.log)"; }
echo "pip install took $(( $(date +%s) - start )) s"
grep -E '^Successfully installed' "$ROOT.pip.log" | head -1 || true
grep -oE '[A-Za-z0-9_.-]+(aarch64|any)\.whl' "$ROOT.pip.log" | sort -u | sed 's/^/wheel /' || true
