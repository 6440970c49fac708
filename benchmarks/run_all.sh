#!/usr/bin/env bash
# Every benchmark part of one protocol, one command per part, then BENCHMARKS.md.
#
#   bash benchmarks/run_all.sh [cpu|smoke]
#
# Each line below is also a command to run on its own. Sized for the cpu protocol; measured on the
# 2-core machine: teacher 6 min, a table-1 search about 3.5 min (20 epoch-equivalents of compute, 2
# trials at once; 2026-12-02) so table 1's 24 searches about 85 min, table 2 about 15-20 min, the
# exported-student table about 25 min, table 3 5 min, table 4 15 s: about 2 h 15 min in all. Table 1 is
# split into commands by arm: with JOBS searches at once each command is one wave on 12+ cores.
# Table-1 commands merge their runs into one JSON (same protocol settings), so any split works.
# Knobs: JOBS (table 1 searches at once, default cores / 2, at most the command's searches), WORKERS
# (table 2 runs at once, default cores), TEACHER_THREADS (torch threads for the one teacher, default 1).
# The GPU protocol has its own script: benchmarks/full_protocol.sh. make_tables.py, last, also redraws
# the figures (benchmarks/figures.py: table 1's hypervolume against compute, a PNG next to its JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

P=${1:-cpu}
shift || true
PY=${PY:-.venv/bin/python}
CORES=$(nproc)
JOBS=${JOBS:-$(( CORES / 2 > 1 ? CORES / 2 : 1 ))}
WORKERS=${WORKERS:-$CORES}
SEEDS=$($PY -c "import sys; sys.path.insert(0, 'benchmarks'); from protocols import PROTOCOLS; print(PROTOCOLS['$P'].seeds)")

search() {  # search ARM...: those arms' searches, at most JOBS at once, 2 trials each
  local n=$(( $# * SEEDS ))
  $PY benchmarks/run.py search --protocol "$P" --arms "$@" --jobs $(( JOBS < n ? JOBS : n )) --parallel 2
}

$PY benchmarks/run.py teacher   --protocol "$P" --threads "${TEACHER_THREADS:-1}"
search joint random
search joint-no-ladder random-ladder
search prune-only distill-only
search torch-pruning
$PY benchmarks/run.py claims    --protocol "$P" --workers "$WORKERS"
$PY benchmarks/run.py exported  --protocol "$P" --workers "$WORKERS"   # after the joint arm: it exports its best
$PY benchmarks/run.py ranking   --protocol "$P"                        # its front of seed 0, each fine-tuned
$PY benchmarks/run.py overheads --protocol "$P"
$PY benchmarks/run.py latency   --protocol "$P"
$PY benchmarks/run.py latency-predictor --protocol "$P"          # the latency predictor vs measured
$PY benchmarks/run.py latency-search --protocol "$P"             # after the joint arm: a search on latency vs it
if [ "$P" = smoke ]; then
  $PY benchmarks/make_tables.py --results benchmarks/results/smoke --out benchmarks/results/smoke/BENCHMARKS.md
else
  $PY benchmarks/make_tables.py
fi
