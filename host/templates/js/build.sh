#!/usr/bin/env sh
# Builds {{name}}.wasm beside the manifest with componentize-qjs (npm).
set -eu
cd "$(dirname "$0")"
[ -d node_modules/componentize-qjs ] || npm install --no-audit --no-fund
npm run --silent build
echo "built {{name}}.wasm"
