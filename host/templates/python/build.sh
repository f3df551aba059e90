#!/usr/bin/env sh
# Builds {{name}}.wasm beside the manifest with componentize-py (PyPI), which
# bundles CPython: pip install -r requirements.txt
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w normalizer componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
