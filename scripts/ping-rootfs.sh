#!/usr/bin/env bash
# Copies Debian's iputils ping, with the shared libraries it loads, into a root filesystem:
#   scripts/ping-rootfs.sh ROOT
# It lands at ROOT/usr/bin/ping, ahead of busybox's applet on PATH, and without the file
# capability the package gives it (a plain copy): it pings through ICMP datagram sockets when
# net.ipv4.ping_group_range allows, as in a container without CAP_NET_RAW. Tests use it.
set -euo pipefail
root=${1:?usage: ping-rootfs.sh ROOT}
ping=/usr/bin/ping
if [ ! -x "$ping" ] || ! "$ping" -V 2>/dev/null | grep -q iputils; then
  echo "ping-rootfs.sh: $ping is not iputils ping; install it with: apt-get install iputils-ping" >&2
  exit 1
fi
mkdir -p "$root/usr/bin"
cp "$ping" "$root/usr/bin/ping"
for lib in $(ldd "$ping" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
