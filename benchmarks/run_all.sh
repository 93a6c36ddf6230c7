#!/usr/bin/env bash
# Run every benchmark at its default (packaged-model) size, one after the other, and write
# benchmarks/results/<name>.json. On 2 CPU cores this takes about an hour; `--quick` runs the
# tiny-model versions in a few minutes instead (results under benchmarks/results/quick/).
#
#   benchmarks/run_all.sh            # packaged models
#   benchmarks/run_all.sh --quick    # tiny random models
#   ONLY="steering trial_batching" benchmarks/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
export TOKENIZERS_PARALLELISM=false
# Cheapest first; search_efficiency evaluates its grid once and caches it (--regrid to redo it).
BENCHMARKS=${ONLY:-"cold_load extraction steering trial_batching resubmit scaling search_efficiency profile_generation validation_scaling analysis_overhead"}
failed=()
for name in $BENCHMARKS; do
  echo "=== benchmarks.$name $* ==="
  if ! python -m "benchmarks.$name" "$@"; then
    failed+=("$name")
  fi
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
