#!/usr/bin/env bash
# The whole test suite: install test dependencies, check the local services,
# lint, type-check, then pytest. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
install_project "test,torch"
cd "$ROOT"
bash scripts/services.sh
echo "==> ruff"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
exec "$VENV/bin/pytest" "$@"
