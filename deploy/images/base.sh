#!/bin/sh
# deploy/images/base.sh - makes the local base image localhost/moemesh-base:bookworm
# once (reused when present): debootstrap --variant=minbase bookworm into a
# temporary directory, then `tar | podman import`. No registry is reachable
# here and none is ever asked (docs: stack-notes.md). Needs root (debootstrap)
# and the CONTAINERS_CONF / CONTAINERS_REGISTRIES_CONF that deploy/images.sh sets.
#   sh deploy/images/base.sh [IMAGE] [MIRROR]
set -eu
IMAGE=${1:-localhost/moemesh-base:bookworm}
MIRROR=${2:-${DEBIAN_MIRROR:-http://deb.debian.org/debian}}
if podman image exists "$IMAGE"; then
    echo "base: $IMAGE present, reused"
    exit 0
fi
dir=$(mktemp -d /var/tmp/moemesh-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT INT TERM
echo "base: debootstrap --variant=minbase bookworm ($MIRROR) into $dir"
debootstrap --variant=minbase bookworm "$dir/rootfs" "$MIRROR" >"$dir/debootstrap.log" 2>&1 || {
    tail -20 "$dir/debootstrap.log" >&2
    echo "base: error: debootstrap failed" >&2
    exit 1
}
# smaller: no documentation, manual pages or translations, now or in what apt
# installs later (the copyright files stay); no apt lists, caches or logs
cat >"$dir/rootfs/etc/dpkg/dpkg.cfg.d/01-moemesh-nodoc" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG
find "$dir/rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
rm -rf "$dir/rootfs/usr/share/man/"* "$dir/rootfs/usr/share/info/"*
find "$dir/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$dir/rootfs/var/lib/apt/lists/"* "$dir/rootfs/var/cache/apt/"*.bin \
    "$dir/rootfs/var/cache/apt/archives/"*.deb "$dir/rootfs/var/log/"*.log
tar -C "$dir/rootfs" --numeric-owner -c . |
    podman import -q --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "base: imported $IMAGE"
