#!/usr/bin/env bash
# The README's first command: set-up, then the whole pipeline on Fashion-MNIST (9 min 14 s on a new
# 2-core AVX-512 Xeon including apt and pip, 2026-12-03; 10 min 42 s from a
# fresh clone on 2 AVX2 cores, 2026-12-03): train the demo's "user's
# model" briefly (cached), compile it into a super-network, train that (300 s at most), search
# it, export the chosen sub-networks, and print the table of the original vs them. Run it again
# to see the table of the finished run; pass --force to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup --core
if ! ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "demo: installing Debian's dataset-fashion-mnist (the data; nothing downloads at run time)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "demo: Fashion-MNIST is missing and apt-get is not usable here (needs root)." >&2
    echo "      Install it with: sudo apt-get install -y dataset-fashion-mnist" >&2
    echo "      or put its four IDX files in a folder and set data.kwargs.root in bench/fmnist_demo.json" >&2
    exit 1
  fi
fi
if [ "${1:-}" = "--force" ]; then
  exec .venv/bin/supernet run bench/fmnist_demo.json --force
fi
exec .venv/bin/supernet run bench/fmnist_demo.json --resume
