"""The stack's settings for the examples: the environment first, then the repository's .env.

``./test_env.sh`` writes the per-install tokens into .env: ``JUPYTER_GATEWAY_AUTH_TOKEN`` (your
tenant's gateway token, which the client reads from the environment by default) and
``FILE_SERVER_TOKEN``.  Importing this module puts what .env sets, and the environment does not,
into ``os.environ``.
"""

import os
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parents[1] / ".env"


def load(env_file: Path = ENV_FILE) -> None:
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#") and value.strip():
            os.environ.setdefault(name.strip(), value.strip())


load()
