"""``python -m testkit.cluster up|down|env``: the local single-node cluster (see ``cluster``).

``up`` prints, last, shell lines that export what a client and the tests need; ``env`` prints
them again for a cluster that is up; ``down`` stops it and removes its state.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from testkit.cluster.cluster import Cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.cluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "env"))
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.command == "down":
        cluster.down()
        print(f"cluster stopped; {cluster.state} removed", file=sys.stderr)
        return 0
    if args.command == "env":
        if not cluster.is_up():
            print(f"no cluster is up (state: {cluster.state})", file=sys.stderr)
            return 1
        exports = cluster.exports()
    else:
        exports = cluster.up()
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
