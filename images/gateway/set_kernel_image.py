"""Point the gateway image's kernelspecs at the kernel image of the same version (build time).

usage: python set_kernel_image.py VERSION KERNELSPEC_DIR...

The kernelspecs under kernels/ name ``mini-jupyter-sandbox/kernel-python:<tag>`` twice: the
process proxy's ``image_name`` (what Enterprise Gateway hands the launcher as KERNEL_IMAGE) and
the launcher's ``--image`` (the one image it accepts without SANDBOX_ALLOWED_KERNEL_IMAGES).
images/build.sh and docker-compose.yaml tag every image of the stack with SANDBOX_VERSION and
pass it to the gateway's build, which runs this on its copies: a gateway image of one version
starts the kernel image of that version.  Only the tag changes; a kernelspec without both
references, or with two different ones, fails the build instead of being left behind.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# Docker's tag syntax.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def with_tag(image: str, tag: str) -> str:
    """``image`` with its tag replaced; a registry's port (``host:5000/name``) is not a tag."""
    name, colon, old = image.rpartition(":")
    if not colon or "/" in old:
        name = image
    return f"{name}:{tag}"


def retag(spec: dict[str, Any], tag: str) -> str:
    """Set the tag of the kernelspec's kernel image, in both places; returns the new image."""
    proxy = spec["metadata"]["process_proxy"]["config"]
    argv: list[str] = spec["argv"]
    image = proxy.get("image_name")
    if "--image" not in argv or argv.index("--image") + 1 >= len(argv):
        raise ValueError("its argv has no --image")
    position = argv.index("--image") + 1
    if not image or argv[position] != image:
        raise ValueError(f"image_name {image!r} and --image {argv[position]!r} differ")
    new = with_tag(image, tag)
    proxy["image_name"] = argv[position] = new
    return new


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python set_kernel_image.py VERSION KERNELSPEC_DIR...", file=sys.stderr)
        return 2
    tag, directories = argv[0], argv[1:]
    if not TAG.fullmatch(tag):
        print(f"set_kernel_image: {tag!r} is not a Docker tag (SANDBOX_VERSION)", file=sys.stderr)
        return 2
    for directory in directories:
        path = Path(directory) / "kernel.json"
        spec = json.loads(path.read_text())
        try:
            image = retag(spec, tag)
        except (KeyError, TypeError, ValueError) as exc:
            print(f"set_kernel_image: {path}: {exc}", file=sys.stderr)
            return 1
        path.write_text(json.dumps(spec, indent=2) + "\n")
        print(f"{path}: {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
