# Sourced by the other scripts: make sure .venv exists and holds the project.
# Usage: install_project [extra]   (e.g. install_project test)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PP_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

install_project() {
    local spec="$ROOT"
    [ -n "${1:-}" ] && spec="$ROOT[$1]"
    if [ ! -x "$PY" ]; then
        echo "==> creating $VENV"
        python3 -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip
    fi
    echo "==> installing prediction-provider${1:+[$1]} into $VENV"
    "$PY" -m pip install --quiet --editable "$spec"
}
