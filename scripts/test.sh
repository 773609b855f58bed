#!/usr/bin/env bash
# The whole test suite: install test dependencies, check the local services,
# build the native gRPC front end,
# lint, type-check, then pytest: everything on SQLite, and again every
# database-touching test (integration, e2e, security) on the real PostgreSQL.
# Extra arguments go to both pytest runs.
source "$(dirname "$0")/_venv.sh"
install_project "test,torch,yfinance"
cd "$ROOT"
bash scripts/services.sh
# The native gRPC front end, which the gRPC tests run against too.
bash scripts/build_grpc_frontend.sh
# Debian's chromium for the browser tests of /docs and /redoc (tests/e2e/test_docs_browser.py);
# playwright drives it and downloads no browser of its own.
if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing chromium, chromium-driver, fonts-dejavu-core"
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        chromium chromium-driver fonts-dejavu-core >/dev/null
fi
# The dashboard's vendored htmx/uPlot/axe-core must match package-lock.json.
# A registry that does not answer skips the check (the unit tests still re-hash the committed
# copies); files that differ from the lockfile's packages fail the run.
if command -v npm >/dev/null; then
    echo "==> npm ci; vendor_assets.py --check"
    if npm ci --no-audit --no-fund --loglevel=error; then
        "$PY" scripts/vendor_assets.py --check
    else
        echo "==> npm ci failed: skipping the vendored-asset check"
    fi
else
    echo "==> npm not found: skipping the vendored-asset check (scripts/vendor_assets.py --check)"
fi
echo "==> ruff"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest (SQLite)"
"$VENV/bin/pytest" "$@"
echo "==> pytest (PostgreSQL: database-touching tests)"
database_tests=()
for dir in tests/integration tests/e2e tests/security; do
    [ -d "$dir" ] && database_tests+=("$dir")
done
# The scale-out tests always run on PostgreSQL; the first run covered them. The browser tests of
# the docs pages do not depend on the database: the first run covered them too.
PP_TEST_DATABASE=postgresql "$VENV/bin/pytest" "${database_tests[@]}" -m "not scale_out and not browser" "$@"
