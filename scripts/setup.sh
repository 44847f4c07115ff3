#!/usr/bin/env bash
# Installs what berth's build, tests and example need on Debian (run as root). Idempotent.
set -euo pipefail
packages=(qemu-system-x86 seabios busybox-static cpio zstd dpkg apt iproute2
  # bootable formats: UKI stub, FAT, ISO, disk conversion, UEFI firmware
  systemd-boot-efi binutils dosfstools mtools xorriso isolinux syslinux-common qemu-utils ovmf
  # the ISO's EFI loader (a GRUB image reading the ISO 9660 tree)
  grub-common grub-efi-amd64-bin
  # registry tests: a registry server, a pusher, token signing, htpasswd
  docker-registry skopeo openssl apache2-utils
  # the data disk: mke2fs and e2fsck are packed into images with [storage]; dumpe2fs in tests
  e2fsprogs
  # the system partition: squashfs from a tar stream (tar2sqfs, no root); its dm-verity hash
  # tree is checked against veritysetup's in tests
  squashfs-tools-ng cryptsetup-bin
  # Secure Boot: signing (sbsign, dated SOURCE_DATE_EPOCH under faketime); tests decrypt the
  # ovmf package's snakeoil key with openssl
  sbsigntool faketime
  # the redis appliance test and benchmark: a Debian root filesystem
  debootstrap
  # the runtime's peers in its benchmarks; ping without CAP_NET_RAW in the security tests;
  # unshare for the runtime's tests
  crun runc iputils-ping util-linux
  # cloud metadata tests: QEMU's guestfwd runs socat to the test's server for each connection
  socat
  # network time tests: chronyd serves the host's time on 127.0.0.1 (-x: never sets the host's clock)
  chrony
  # the project kernel (kernel-config/build): Debian's kernel source and what building it needs
  linux-source-6.1 make gcc libc6-dev flex bison bc libelf-dev xz-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
# `berth build` fetches the Debian kernel with `apt-get download`, which needs package lists.
if [ "${#missing[@]}" -gt 0 ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -q
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "setup.sh: cargo is missing: install a Rust toolchain (rustup, stable, 1.87 or newer) and run this again" >&2
  exit 1
fi
