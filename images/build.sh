#!/usr/bin/env bash
# Build every image of the stack: mini-jupyter-sandbox/<name>:<version> and :latest.
#
# Base image: $BASE_IMAGE when set; else the official python:3.11-slim-bookworm when it is
# present or can be pulled; else (no registry reachable) the offline Debian base that
# images/build-offline-base.sh builds once and then reuses.  Layers are ordered so that a rebuild
# after a source change reinstalls nothing; a rebuild with nothing changed takes seconds.
#
# Env: SANDBOX_BUILD_NO_CACHE=1 rebuilds every layer (to measure a cold build).
#
# Usage: images/build.sh [name ...]     (default: all of kernel-python kernel-bash gateway notebook
#                                        fileserver controller; controller only once controller/
#                                        exists)
set -euo pipefail

cd "$(dirname "$0")/.."
version="${SANDBOX_VERSION:-0.1.0}"
official_base="python:3.11-slim-bookworm"

if [[ -z "${BASE_IMAGE:-}" ]]; then
    if docker image inspect "$official_base" >/dev/null 2>&1 \
        || timeout "${PULL_TIMEOUT:-60}" docker pull -q "$official_base" >/dev/null 2>&1; then
        BASE_IMAGE="$official_base"
    else
        echo "no image registry reachable: using the offline base"
        images/build-offline-base.sh
        BASE_IMAGE="${OFFLINE_BASE_IMAGE:-mini-jupyter-sandbox/offline-base:bookworm}"
    fi
fi
echo "base image: $BASE_IMAGE"

if [[ $# -gt 0 ]]; then
    names=("$@")
else
    names=(kernel-python kernel-bash kernel-javascript kernel-r gateway notebook fileserver)
    if [[ -d controller ]]; then
        names+=(controller)
    else
        echo "controller/ does not exist yet: skipping the controller image"
    fi
fi

cache_args=()
if [[ "${SANDBOX_BUILD_NO_CACHE:-0}" == 1 ]]; then
    cache_args=(--no-cache)
fi

for name in "${names[@]}"; do
    start=$SECONDS
    # The gateway's kernelspecs name the kernel image of this version (images/gateway/Dockerfile).
    version_args=()
    if [[ "$name" == gateway ]]; then
        version_args=(--build-arg "SANDBOX_VERSION=$version")
    fi
    # ${a[@]+...}: an empty array is "unbound" to bash 3.2 (macOS) under set -u.
    docker build --quiet ${cache_args[@]+"${cache_args[@]}"} ${version_args[@]+"${version_args[@]}"} \
        --file "images/$name/Dockerfile" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --tag "mini-jupyter-sandbox/$name:$version" \
        --tag "mini-jupyter-sandbox/$name:latest" \
        . >/dev/null
    echo "built mini-jupyter-sandbox/$name:$version in $((SECONDS - start))s"
done
