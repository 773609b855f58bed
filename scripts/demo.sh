#!/usr/bin/env bash
# One command from a fresh clone to a running server: install, train the demo
# models on the real EURUSD/GOOG bars (skipped once registered), serve on
# 127.0.0.1:8000 and print a ready-to-paste curl example. The `clients` extra holds what
# the README's client examples import (tritonclient), so they run as written.
source "$(dirname "$0")/_venv.sh"
install_project clients
cd "$ROOT"
exec "$VENV/bin/prediction-provider" demo "$@"
