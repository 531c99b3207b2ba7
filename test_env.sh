#!/usr/bin/env bash
# Set up the test environment (Linux/macOS): build the images, bring the compose stack up, wait
# until every service answers, and install the package with its test dependencies.
#
#   ./test_env.sh              then: python -m pytest tests/
#   SKIP_STACK=1 ./test_env.sh installs the Python side only (no Docker needed)
#   ./test_env.sh --local      no Docker at all: gateway :8889 and file server :8080 with kernels
#                              as plain local processes, for trying the API — NOT ISOLATED
#   ./test_env.sh --secrets    only write the per-install secrets into .env (done by every run)
set -euo pipefail
cd "$(dirname "$0")"

python="${PYTHON:-python3}"
[[ "${1:-}" == --local ]] && SKIP_STACK=1

compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        docker compose "$@"
    fi
}

# Per-install secrets, written into .env once (docker-compose reads it; so do the examples).
# The stack refuses to start without them: a documented default would be public knowledge.
ensure_secrets() {
    [[ -f .env ]] || cp .env.example .env
    local token
    token="$(sed -n 's/^FILE_SERVER_TOKEN=//p' .env | tail -n 1)"
    if [[ -z "$token" || "$token" == local-dev-token ]]; then
        token="$("$python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
        sed -i.bak '/^FILE_SERVER_TOKEN=/d' .env && rm -f .env.bak
        echo "FILE_SERVER_TOKEN=$token" >>.env
        chmod 600 .env
        echo "Wrote a new random FILE_SERVER_TOKEN into $(pwd)/.env (keep it private)."
    fi
    echo "Secrets: $(pwd)/.env (FILE_SERVER_TOKEN is the file server's bearer token)."
}

wait_for() {  # wait_for NAME URL
    local deadline=$((SECONDS + ${STACK_TIMEOUT:-180}))
    until "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)" "$2" 2>/dev/null; do
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
        wait_for gateway "http://127.0.0.1:${GATEWAY_PORT:-8889}/api/kernelspecs"
        wait_for notebook "http://127.0.0.1:${NOTEBOOK_PORT:-8888}/api/status"
        wait_for fileserver "http://127.0.0.1:${FILE_SERVER_PORT:-8080}/health"
    fi
fi

"$python" -m pip install -e ".[dev]"
if [[ "${1:-}" == --local ]]; then
    exec "$python" -m testkit.local_stack
fi
echo
echo "Test environment ready.  Run:  python -m pytest tests/"
