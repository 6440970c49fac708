#!/usr/bin/env bash
# Table 5, the full protocol, on a machine with a CUDA GPU: resnet56 teacher (30 epochs), the shipped
# resnet56_to_resnet space at full widths, every training image, 40 trials of 15 epochs per search,
# n = 3 seeds; then tables 2-4 under the same protocol, and BENCHMARKS.md.
#
#   bash benchmarks/full_protocol.sh [DATASET]     # default fashion-mnist (offline from Debian's package);
#                                                  # cifar10 needs its files under $AUTOKD_HOME/data or internet
# Knobs: JOBS (searches at once, default 1), PARALLEL (trials at once per search, default 4, each with a
# quarter of the GPU), WORKERS (table 2 runs at once on the GPU, default 4), TEACHER_THREADS (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
DATASET=${1:-fashion-mnist}
ARGS=(--protocol full)
[ "$DATASET" != fashion-mnist ] && ARGS+=(--dataset "$DATASET")
export AUTOKD_OFFLINE=${AUTOKD_OFFLINE:-0}   # the full protocol may fetch its dataset

$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'full protocol: no CUDA device on this machine')"
$PY -c "from autokd.data import load_dataset; d = load_dataset('$DATASET'); print('$DATASET:', len(d.train_y), 'training images')"

$PY benchmarks/run.py teacher   "${ARGS[@]}" --threads "${TEACHER_THREADS:-4}"
$PY benchmarks/run.py search    "${ARGS[@]}" --jobs "${JOBS:-1}" --parallel "${PARALLEL:-4}"
$PY benchmarks/run.py claims    "${ARGS[@]}" --workers "${WORKERS:-4}"
$PY benchmarks/run.py overheads "${ARGS[@]}"
$PY benchmarks/run.py latency   "${ARGS[@]}"
$PY benchmarks/run.py latency-predictor "${ARGS[@]}"
$PY benchmarks/run.py latency-search "${ARGS[@]}" --parallel "${PARALLEL:-4}"
$PY benchmarks/make_tables.py
