#!/usr/bin/env sh
# Builds {{name}}.wasm beside the manifest with componentize-js (npm).
set -eu
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund
npm run --silent build
echo "built {{name}}.wasm"
