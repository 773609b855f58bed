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
# The scale-out tests always run on PostgreSQL; the first run covered them.
PP_TEST_DATABASE=postgresql "$VENV/bin/pytest" "${database_tests[@]}" -m "not scale_out" "$@"
