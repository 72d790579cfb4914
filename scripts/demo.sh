#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run `quarry demo` on the sample data shipped with quarry.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/quarry demo --output "${1:-out/demo}" --overwrite
