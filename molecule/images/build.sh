#!/usr/bin/env bash
# Build the systemd base images that the Molecule scenarios run, from Debian's mirror with
# debootstrap: Docker Hub is unreachable from the lab's test machines. Skips an image that exists
# unless FORCE=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/../../scripts/start-dockerd.sh"

build() {
  local image=$1 suite=$2 mirror=$3
  if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "image $image exists (FORCE=1 rebuilds it)"
    return
  fi
  command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install -y debootstrap" >&2; exit 1; }
  local rootfs
  rootfs=$(mktemp -d /tmp/ailab-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  local start=$SECONDS
  debootstrap --variant=minbase \
    --include=python3,python3-apt,systemd,systemd-sysv,dbus,sudo,iproute2,procps,ca-certificates,kmod,iptables,curl,gnupg \
    "$suite" "$rootfs" "$mirror" >/tmp/ailab-debootstrap-"$suite".log
  # systemd in a container: no getty, no udev triggers, a machine-id made at first boot.
  rm -f "$rootfs"/etc/machine-id "$rootfs"/var/lib/dbus/machine-id
  touch "$rootfs"/etc/machine-id
  rm -f "$rootfs"/lib/systemd/system/multi-user.target.wants/getty.target
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV container=docker' --change 'CMD ["/sbin/init"]' \
    - "$image" >/dev/null
  echo "built $image from $suite in $((SECONDS - start)) s"
}

build ailab/debian:bookworm bookworm http://deb.debian.org/debian
