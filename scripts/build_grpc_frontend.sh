#!/usr/bin/env bash
# Build pp-grpc-frontend, the native gRPC transport (native/grpc_frontend), into the
# virtual environment's bin/, where the server finds it (PP_GRPC_FRONTEND=native).
# It needs g++ and gRPC C++ (Debian/Ubuntu: libgrpc++-dev); as root, missing ones
# are installed with apt-get. Rebuilds only when the source is newer than the binary.
source "$(dirname "$0")/_venv.sh"
SOURCE="$ROOT/native/grpc_frontend/frontend.cc"
TARGET="$VENV/bin/pp-grpc-frontend"

if [ -x "$TARGET" ] && [ "$TARGET" -nt "$SOURCE" ]; then
    echo "==> pp-grpc-frontend is up to date"
    exit 0
fi
if ! { command -v g++ >/dev/null && pkg-config --exists grpc++ 2>/dev/null; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing g++ and gRPC C++ (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq g++ pkg-config libgrpc++-dev >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq g++ pkg-config libgrpc++-dev >/dev/null; }
    else
        echo "!!  pp-grpc-frontend needs g++ and gRPC C++ (libgrpc++-dev): install them and run this again" >&2
        exit 1
    fi
fi
echo "==> building pp-grpc-frontend"
mkdir -p "$VENV/bin"
# shellcheck disable=SC2046 # pkg-config's flags are separate words
g++ -O2 -std=c++17 -Wall -Wextra -o "$TARGET.tmp" "$SOURCE" $(pkg-config --cflags --libs grpc++)
mv "$TARGET.tmp" "$TARGET"
