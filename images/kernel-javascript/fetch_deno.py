"""Fetch the Deno binary from the npm registry at build time, checked against its integrity.

usage: python fetch_deno.py VERSION SHA512_INTEGRITY DESTINATION

The ``deno`` npm package ships its binary in a per-platform package, ``@deno/linux-x64-glibc``;
this takes that package's tarball, as ``npm ci`` would from a lock file (the ``sha512-…``
integrity of the registry's metadata is pinned in the Dockerfile), and installs its ``deno``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org/@deno/linux-x64-glibc/-/linux-x64-glibc-{version}.tgz"


def main(version: str, integrity: str, destination: str) -> int:
    with urllib.request.urlopen(REGISTRY.format(version=version), timeout=300) as response:
        tarball = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != integrity:
        print(f"fetch_deno: integrity {digest} is not the pinned {integrity}", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        member = archive.extractfile("package/deno")
        if member is None:
            print("fetch_deno: the package holds no package/deno", file=sys.stderr)
            return 1
        target = Path(destination)
        target.write_bytes(member.read())
    target.chmod(0o755)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
