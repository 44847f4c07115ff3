#!/usr/bin/env bash
# Makes a busybox OCI image from Debian's busybox-static, with `berth image import`:
#   scripts/busybox-image.sh LAYOUT_DIR [TAG]
# BERTH names the berth binary (default: target/release/berth). With PING=1 the image also
# holds iputils ping (scripts/ping-rootfs.sh).
set -euo pipefail
layout=${1:?usage: busybox-image.sh LAYOUT_DIR [TAG]}
tag=${2:-latest}
berth=${BERTH:-$(dirname "$0")/../target/release/berth}
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ldd "$busybox" 2>/dev/null | grep -q '=>'; then
  echo "busybox-image.sh: $busybox is not the static busybox; install it with: apt-get install busybox-static" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,root,tmp,var,proc,sys,dev,home/app}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n' > "$root/etc/group"
chown 1000:1000 "$root/home/app"
if [ "${PING:-}" = 1 ]; then
  "$(dirname "$0")/ping-rootfs.sh" "$root"
fi
"$berth" image import "$root" --tag "$tag" -o "$layout" --cmd /bin/sh --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
echo "$layout:$tag"
