#!/usr/bin/env bash
# Build an image equivalent to python:3.11-slim-bookworm from Debian packages, for hosts where no
# image registry is reachable (air-gapped machines, this project's CI).  Every Dockerfile takes it
# through --build-arg BASE_IMAGE=...; the images then create their own venv under /opt/venv, so
# they behave the same on this base (Debian's python3.11) and on the official one.
#
# Usage: images/build-offline-base.sh            # reuse the image when it already exists
#        REBUILD=1 images/build-offline-base.sh  # build it again
# Env:   OFFLINE_BASE_IMAGE  tag to produce   (default mini-jupyter-sandbox/offline-base:bookworm)
#        DEBIAN_MIRROR       Debian mirror    (default: the host's apt sources, else deb.debian.org)
#        HOST_CA_BUNDLE      CA bundle to trust inside (default /etc/ssl/certs/ca-certificates.crt
#                            when present; set to "" to keep Debian's own bundle only)
set -euo pipefail

image="${OFFLINE_BASE_IMAGE:-mini-jupyter-sandbox/offline-base:bookworm}"
ca_bundle="${HOST_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"

if [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "offline base $image present, reusing it (REBUILD=1 to rebuild)"
    exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    # deb822 sources first (Debian 12 default), then the one-line format.
    mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -m1 '/debian/\?$' || true)"
fi
if [[ -z "$mirror" ]]; then
    mirror="$(grep -hs '^deb ' /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -m1 '/debian/\?$' || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

command -v debootstrap >/dev/null || { echo "debootstrap is required (apt-get install debootstrap)" >&2; exit 1; }

rootfs="$(mktemp -d /tmp/offline-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap bookworm from $mirror into $rootfs"
# minbase keeps the image close to the slim official one; tini is there for images that want
# an init process (the notebook / gateway reap their children).
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,tini,netbase \
    bookworm "$rootfs" "$mirror"

cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
SOURCES

env_changes=()
if [[ -n "$ca_bundle" && -f "$ca_bundle" ]]; then
    # The host bundle holds Debian's CAs plus whatever a TLS-inspecting proxy on this network
    # needs.  pip inside a venv uses its vendored certifi bundle, hence PIP_CERT as well.
    cp "$ca_bundle" "$rootfs/usr/local/share/host-ca-bundle.crt"
    cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    env_changes+=(--change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
    env_changes+=(--change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
fi

# Trim what an image does not need: package caches, docs, man pages.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log

# Same interface as the official python image: `python` and `python3` on PATH, UTF-8 locale.
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    "${env_changes[@]}" \
    --change 'CMD ["python3"]' \
    - "$image"
echo "built $image"
