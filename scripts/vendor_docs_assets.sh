#!/usr/bin/env bash
# Refresh the Swagger UI and ReDoc files that /docs and /redoc serve, from the npm registry,
# and rewrite their checksum manifest (tests/unit/test_docs_assets.py checks the files against it).
# Usage: bash scripts/vendor_docs_assets.sh [swagger-ui-dist version] [redoc version]
set -euo pipefail
SWAGGER_UI_VERSION="${1:-5.35.0}"
REDOC_VERSION="${2:-2.5.4}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATIC="$ROOT/src/prediction_provider/api/static"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "swagger-ui-dist@$SWAGGER_UI_VERSION" "redoc@$REDOC_VERSION" >/dev/null
mkdir swagger-ui redoc
tar xzf "swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C swagger-ui
tar xzf "redoc-$REDOC_VERSION.tgz" -C redoc

rm -rf "$STATIC/swagger-ui" "$STATIC/redoc"
mkdir -p "$STATIC/swagger-ui" "$STATIC/redoc"
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE NOTICE; do
    cp "swagger-ui/package/$file" "$STATIC/swagger-ui/$file"
done
for file in bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE; do
    cp "redoc/package/$file" "$STATIC/redoc/$(basename "$file")"
done

python3 - "$STATIC" "$SWAGGER_UI_VERSION" "$REDOC_VERSION" <<'PY'
import hashlib, json, sys
from pathlib import Path

static, swagger_ui, redoc = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
files = {
    path.relative_to(static).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
    for folder in ("swagger-ui", "redoc")
    for path in sorted((static / folder).iterdir())
}
manifest = {"packages": {"swagger-ui-dist": swagger_ui, "redoc": redoc}, "sha256": files}
(static / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
PY
echo "vendored swagger-ui-dist $SWAGGER_UI_VERSION and redoc $REDOC_VERSION into $STATIC"
