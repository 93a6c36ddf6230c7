#!/usr/bin/env bash
# Build .wheels/: the Python packages benchmarks/gpu_check.py needs on the GPU device machine that its
# image lacks (pydantic and what it needs; torch, transformers, accelerate, safetensors, numpy, pyyaml,
# filelock, tokenizers and psutil are there). The device has no network, so they travel as wheels:
# `carry: [".wheels"]` (benchmarks/README.md, "GPU check"). Needs PyPI here; run from anywhere.
#
# The device runs CPython 3.12 on x86-64 (the device tool's KINDS.md); pydantic is pinned to the
# version this venv's tests pass with. Prints the wheels' size and the size of everything that
# travels (tracked and untracked-not-ignored files, plus .wheels), and fails over the 64 MiB limit.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
version=$("$python" -c "import pydantic; print(pydantic.VERSION)")
rm -rf .wheels
mkdir -p .wheels
"$python" -m pip download --quiet --only-binary=:all: --implementation cp --python-version 3.12 --abi cp312 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d .wheels "pydantic==$version"
ls -1 .wheels
wheels=$(du -cb .wheels/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s}')
total=$((wheels + tree))
awk -v w="$wheels" -v t="$tree" 'BEGIN {m = 1048576; printf "wheels %.1f MiB + working tree %.1f MiB = %.1f MiB \
(device limit 64 MiB)\n", w / m, t / m, (w + t) / m}'
if [ "$total" -ge $((64 * 1048576)) ]; then
    echo "too large to travel: ignore or remove files, or carry fewer wheels" >&2
    exit 1
fi
