#!/usr/bin/env bash
# Every benchmark part of one protocol, one command per part, then BENCHMARKS.md.
#
#   bash benchmarks/run_all.sh [cpu|smoke]
#
# Each line below is also a command to run on its own. Sized for the cpu protocol; measured on the
# 2-core machine a table-1 search takes about 4.5 min (10 trials, 2 at once), so table 1 is split into
# three commands by arm: with JOBS searches at once each command is one wave (about 5 min) on 12+ cores.
# Table-1 commands merge their runs into one JSON (same protocol settings), so any split works.
# Knobs: JOBS (table 1 searches at once, default cores / 2, at most the command's searches), WORKERS
# (table 2 runs at once, default cores), TEACHER_THREADS (torch threads for the one teacher, default 1).
# The GPU protocol has its own script: benchmarks/full_protocol.sh.
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
search prune-only distill-only
search joint-no-es
$PY benchmarks/run.py claims    --protocol "$P" --workers "$WORKERS"
$PY benchmarks/run.py overheads --protocol "$P"
$PY benchmarks/run.py latency   --protocol "$P"
if [ "$P" = smoke ]; then
  $PY benchmarks/make_tables.py --results benchmarks/results/smoke --out benchmarks/results/smoke/BENCHMARKS.md
else
  $PY benchmarks/make_tables.py
fi
