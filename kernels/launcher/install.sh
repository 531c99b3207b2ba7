#!/bin/sh
# Prepares a kernel image for launch_kernel.py (run as root at build time, from a COPY of this
# directory): the venv /opt/venv with the launcher's dependency, the launcher itself in
# /usr/local/lib/sandbox, and the kernel user of every kernel image (uid 1000, gid 100) with its
# private home and the shared volume's mount point.  The image's own kernel goes into the same
# venv or the system afterwards; see kernels/README.md.
set -eu
here="$(dirname "$0")"
python3 -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r "$here/requirements.txt"
install -D -m 0644 "$here/launch_kernel.py" /usr/local/lib/sandbox/launch_kernel.py
/opt/venv/bin/python -m compileall -q /opt/venv/lib /usr/local/lib/sandbox
useradd --uid 1000 --gid 100 --no-create-home --home-dir /home/jovyan --shell /bin/bash jovyan
install -d -o 1000 -g 100 -m 0700 /home/jovyan
install -d -o 1000 -g 100 -m 0775 /data/shared
