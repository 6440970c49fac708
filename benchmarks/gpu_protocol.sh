#!/usr/bin/env bash
# The device protocol (benchmarks/protocols.py: `device`) on the lent H200, in the device calls that
# benchmarks/device_kit.sh prints (benchmarks/README.md gives the sequence). Every call runs this same
# command: it stages the kit part the call carried, then runs each step that what has arrived allows
# and that is not done yet, and copies the results to $OUT:
#
#   with the dataset (part 1)   the GPU-path tests, the resnet56 teacher, table 3's GPU rows
#   with every wheel (part 2)   table 1's arms, table 4, the tables page
#
#   bash benchmarks/device_protocol.sh                        # on the device (python3 there has torch 2.11)
#   bash benchmarks/device_protocol.sh --dry-run [--results DIR]   # the same steps on a CPU, tiny
#                                                             # (`device-dry`: digits, 1 epoch, 2 trials)
#
# The dry run needs no kit (this machine's Python has every package) and writes to DIR (default: a
# new folder under /tmp), never to benchmarks/results/. Each step runs under a time limit (seconds,
# STEP_LIMIT_<STEP> overrides) so that one slow step cannot take the others' results with it; the
# limits add up to the protocol's 8 minutes (benchmarks/device_estimate.py estimated 6.7), and the
# dry run gives each DRY_SLACK (5) times as long: its point is that every step runs, on any CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DRY=0
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --results) RESULTS=$2; shift ;;
    *) echo "usage: bash benchmarks/device_protocol.sh [--dry-run] [--results DIR]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$DRY" = 1 ]; then
  P=device-dry
  PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  RESULTS=${RESULTS:-$(mktemp -d /tmp/autokd-device-dry.XXXXXX)}
  WORK=$RESULTS/work
else
  P=device
  PY=${PY:-python3}
  WORK=${AUTOKD_DEVICE_WORK:-/tmp/autokd-device}   # outside the checkout: survives between warm calls
  RESULTS=${RESULTS:-$WORK/results}
fi
OUTDIR=${OUT:-$RESULTS/out}
mkdir -p "$RESULTS" "$OUTDIR" "$WORK"
exec > >(tee -a "$OUTDIR/log.txt") 2>&1
export PYTHONUNBUFFERED=1 AUTOKD_OFFLINE=1 AUTOKD_HOME=$WORK/home RAY_ADDRESS=local
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}   # autokd from this checkout, not installed
STAGE=$WORK/kit
SITE=$WORK/site
say() { echo "$(date +%H:%M:%S) device protocol ($P): $*"; }
say "results in $RESULTS; \$OUT: $OUTDIR"

# ---------------------------------------------------------------- the kit: stage, dataset, wheels
if [ -d .kit ]; then $PY benchmarks/device_kit.py stage --kit .kit --stage "$STAGE"; fi
KIT_PACKAGES="import optuna, ray.tune, torch_pruning, plotly"
HAVE_WHEELS=0
if $PY -c "$KIT_PACKAGES" 2>/dev/null; then
  HAVE_WHEELS=1
else
  if $PY benchmarks/device_kit.py install --stage "$STAGE" --target "$SITE"; then :; fi
  [ -f "$SITE/.autokd-kit" ] && export PYTHONPATH=$PYTHONPATH:$SITE   # after the device's own packages
  $PY -c "$KIT_PACKAGES" 2>/dev/null && HAVE_WHEELS=1
fi
HAVE_DATA=1
if [ "$DRY" = 0 ]; then
  $PY benchmarks/device_kit.py data --stage "$STAGE" --data-root "$AUTOKD_HOME/data" || HAVE_DATA=0
fi
if [ "$HAVE_DATA" = 0 ] && [ "$HAVE_WHEELS" = 0 ]; then
  say "nothing to run: no kit part here (a fresh machine?). Carry .kit/part1 first; benchmarks/README.md"
  exit 3
fi

# ---------------------------------------------------------------- the machine, once
if [ ! -f "$RESULTS/machine.txt" ]; then
  { $PY -c "import platform, torch; print('python', platform.python_version(), '| torch', torch.__version__, \
'| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
    nproc; } > "$RESULTS/machine.txt" 2>&1
fi
cat "$RESULTS/machine.txt"
if [ "$DRY" = 0 ]; then
  $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'device protocol: no CUDA device here')" || exit 4
fi

# ---------------------------------------------------------------- the steps
copy_out() {  # the results so far to $OUT (at most 8 files come back: these 7)
  for f in "$RESULTS"/*-"$P".json "$RESULTS"/BENCHMARKS-"$P".md; do [ -f "$f" ] && cp "$f" "$OUTDIR/"; done
  local card
  card=$(ls "$RESULTS"/teachers/*/card.json 2>/dev/null | head -1)
  [ -n "$card" ] && cp "$card" "$OUTDIR/teacher-card-$P.json"
  return 0
}
step() {  # step NAME SECONDS COMMAND...: once (a marker file), under a time limit
  local name=$1 limit=$2 var="STEP_LIMIT_${1^^}"
  shift 2
  [ "$DRY" = 1 ] && limit=$(( limit * ${DRY_SLACK:-5} ))
  [ -f "$RESULTS/.done-$name" ] && { say "$name: done in an earlier call"; return 0; }
  say "$name (at most ${!var:-$limit} s)"
  local t0=$SECONDS
  timeout --kill-after=10 "${!var:-$limit}" "$@"
  local rc=$?
  say "$name: exit $rc after $(( SECONDS - t0 )) s"
  [ $rc = 0 ] && touch "$RESULTS/.done-$name"
  copy_out
  return 0
}
RUN=(benchmarks/run.py --protocol "$P" --results "$RESULTS")
if [ "$HAVE_DATA" = 1 ]; then
  step tests 30 $PY -m pytest -q -p no:cacheprovider tests/test_train_device.py
  step teacher 100 $PY "${RUN[@]}" teacher --threads "$(( $(nproc) < 4 ? $(nproc) : 4 ))"   # 4, or fewer CPUs
  step gpu 130 $PY "${RUN[@]}" gpu
fi
if [ "$HAVE_WHEELS" = 1 ] && [ "$HAVE_DATA" = 1 ]; then
  # table 1's five search arms (sized for them; inherit and torch-pruning wait for a longer lease), one
  # search after the other, each with `parallel` trials on the GPU at once
  step search 180 $PY "${RUN[@]}" search --jobs 1 --arms joint random random-ladder prune-only distill-only
  step latency 40 $PY "${RUN[@]}" latency
  $PY benchmarks/make_tables.py --results "$RESULTS" --out "$RESULTS/BENCHMARKS-$P.md"
  copy_out
  say "all steps ran; results in $RESULTS and \$OUT"
else
  say "the wheels are not all here yet: the next call carries the next part (benchmarks/README.md)"
fi
