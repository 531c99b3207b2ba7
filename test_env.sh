#!/usr/bin/env bash
# Set up the test environment (Linux/macOS): build the images, bring the compose stack up, wait
# until every service answers, and install the package with its test dependencies.
#
#   ./test_env.sh              then: python -m pytest tests/
#   SKIP_STACK=1 ./test_env.sh installs the Python side only (no Docker needed)
#   ./test_env.sh --local      no Docker at all: gateway :8889 and file server :8080 with kernels
#                              as plain local processes, for trying the API — NOT ISOLATED
#   ./test_env.sh --secrets    only write the per-install secrets into .env (done by every run)
#   ./test_env.sh --kubernetes all of the above, then a single-node Kubernetes cluster on this
#                              machine (root, Linux; binaries built from Go modules on the first
#                              run) with the chart installed by helm; prints, last, the exports
#                              (KUBECONFIG, GATEWAY_HTTP, ...): eval "$(./test_env.sh --kubernetes)"
#   ./test_env.sh --kubernetes down   stops that cluster and removes its state
set -euo pipefail
cd "$(dirname "$0")"

python="${PYTHON:-python3}"
[[ "${1:-}" == --local ]] && SKIP_STACK=1
if [[ "${1:-}" == --kubernetes ]]; then
    [[ "${2:-}" == down ]] && exec "$python" -m testkit.cluster down
    # Only the exports reach stdout (fd 3); every step's progress goes to stderr.
    exec 3>&1 1>&2
fi

compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        docker compose "$@"
    fi
}

# Per-install secrets, written into .env once (docker-compose reads it; so do the examples).
# The stack refuses to start without them: a documented default would be public knowledge.
#   FILE_SERVER_TOKEN           the file server's bearer token
#   JUPYTER_GATEWAY_AUTH_TOKEN  the gateway token of tenant "local" (you: the client, examples,
#                               /metrics); the client reads this variable by default
#   NOTEBOOK_GATEWAY_TOKEN      the gateway token of tenant "notebook" (the notebook server)
# The gateway's tenants file, .sandbox/tenants.json, is written from them on every run.
ensure_secrets() {
    [[ -f .env ]] || cp .env.example .env
    chmod 600 .env
    local name token
    for name in FILE_SERVER_TOKEN JUPYTER_GATEWAY_AUTH_TOKEN NOTEBOOK_GATEWAY_TOKEN; do
        token="$(sed -n "s/^$name=//p" .env | tail -n 1)"
        if [[ -z "$token" || "$token" == local-dev-token ]]; then
            token="$("$python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
            sed -i.bak "/^$name=/d" .env && rm -f .env.bak
            echo "$name=$token" >>.env
            echo "Wrote a new random $name into $(pwd)/.env (keep it private)."
        fi
    done
    # A bind mount of a missing file leaves a directory in its place: replace it.
    [[ -d .sandbox/tenants.json ]] && rmdir .sandbox/tenants.json
    mkdir -p .sandbox && chmod 700 .sandbox
    (umask 077 && "$python" - .env .sandbox/tenants.json <<'PY'
import json, sys
env = dict(
    line.split("=", 1) for line in open(sys.argv[1]).read().splitlines() if "=" in line
    and not line.lstrip().startswith("#")
)
tenants = {
    "local": {"token": env["JUPYTER_GATEWAY_AUTH_TOKEN"], "metrics": True},
    "notebook": {"token": env["NOTEBOOK_GATEWAY_TOKEN"]},
}
with open(sys.argv[2], "w") as f:
    json.dump({"tenants": tenants}, f, indent=2)
PY
    )
    echo "Secrets: $(pwd)/.env (gateway and file server tokens) and .sandbox/tenants.json."
}

wait_for() {  # wait_for NAME URL [TOKEN]
    local deadline=$((SECONDS + ${STACK_TIMEOUT:-180}))
    until "$python" -c "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={'Authorization': 'token ' + sys.argv[2]} if sys.argv[2] else {}), timeout=3)" "$2" "${3:-}" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            echo "$1 did not become healthy at $2; see: docker-compose logs $1" >&2
            return 1
        fi
        sleep 1
    done
    echo "$1 is up at $2"
}

if [[ "${1:-}" == --secrets ]]; then
    ensure_secrets
    exit 0
fi

if [[ "${SKIP_STACK:-0}" != 1 ]]; then
    if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
        echo "No Docker engine reachable: the stack cannot start here, and the Docker tests will" >&2
        echo "skip.  Start dockerd (or Docker Desktop) and run this again for the full suite." >&2
        echo "To try the API without isolation meanwhile: ./test_env.sh --local" >&2
    else
        # Builds with the official base where a registry is reachable, else with the offline
        # base (debootstrap); a no-op in seconds when the images are current.
        images/build.sh
        ensure_secrets
        compose up -d
        wait_for gateway "http://127.0.0.1:${GATEWAY_PORT:-8889}/api/kernelspecs" \
            "$(sed -n 's/^JUPYTER_GATEWAY_AUTH_TOKEN=//p' .env | tail -n 1)"
        wait_for notebook "http://127.0.0.1:${NOTEBOOK_PORT:-8888}/api/status"
        wait_for fileserver "http://127.0.0.1:${FILE_SERVER_PORT:-8080}/health"
    fi
fi

"$python" -m pip install -e ".[dev]"
if [[ "${1:-}" == --local ]]; then
    exec "$python" -m testkit.local_stack
fi
if [[ "${1:-}" == --kubernetes ]]; then
    # The images were built above; the cluster imports them. Progress goes to stderr, the
    # exports to stdout, last.
    echo "Starting the Kubernetes cluster (the first run builds its binaries: ~20 minutes)." >&2
    exec "$python" -m testkit.cluster up >&3
fi
echo
echo "Test environment ready.  Run:  python -m pytest tests/"
