#!/usr/bin/env bash
# Run a command inside the aarch64 root under qemu-user, as a Raspberry Pi 4 would run it.
#
#   sudo deploy/arm64/chroot-run.sh ROOT COMMAND [ARG...]
#
# Each call gets its own mount namespace (unshare -m), so /proc, /dev, /sys and the fake cpuinfo are
# mounted for this command only and vanish with it; the network is the host's (loopback included).
# Two traps of qemu 7.2 are avoided here:
#  - onnxruntime segfaults at import when /proc/cpuinfo is the host's x86 one: a two-core Cortex-A72
#    cpuinfo (cpuinfo-cortex-a72 beside this script) is bind-mounted over it;
#  - qemu's default CPU emulates SVE and makes inference ~18x slower: QEMU_CPU=cortex-a72 (Pi 4);
#    set QEMU_CPU=cortex-a57 for a Jetson Nano.
set -euo pipefail
ROOT=$(cd "${1:?usage: chroot-run.sh ROOT COMMAND [ARG...]}" && pwd)
shift
[ $# -gt 0 ] || { echo "chroot-run.sh: no command" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
CPUINFO=${EDGECUT_FAKE_CPUINFO:-$HERE/cpuinfo-cortex-a72}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}
exec unshare --mount --propagation private /bin/sh -ec '
  root=$1; cpuinfo=$2; shift 2
  mount -t proc proc "$root/proc"
  mount --bind "$cpuinfo" "$root/proc/cpuinfo"
  mount --rbind /dev "$root/dev"
  mount --rbind -o ro /sys "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
  exec chroot "$root" /usr/bin/env -i PATH=/opt/edgecut/bin:/usr/local/bin:/usr/bin:/bin \
    HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" "$@"
' chroot-run "$ROOT" "$CPUINFO" "$@"
