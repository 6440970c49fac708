#!/usr/bin/env bash
# The gpu protocol (benchmarks/protocols.py: `gpu`) on any machine with a CUDA GPU and autokd installed
# (`pip install -e ".[bench]"`): minutes, not the full protocol's hours. Steps, each run once (a step that
# finished is skipped when the script runs again) and each allowed to fail without taking the others:
#
#   tests     tests/test_train_device.py on CUDA (the GPU code paths)
#   teacher   the resnet56 teacher on all of Fashion-MNIST
#   gpu       table 3's GPU rows: images/s of 1, 4 and 8 trials at once, bf16 autocast off and on
#   search    table 1's arms at n = 1
#   latency   table 4
#   then the page (make_tables.py), whose GPU section names the GPU every JSON was recorded on.
#
#   bash benchmarks/gpu_protocol.sh                              # JSON in benchmarks/results, page BENCHMARKS.md
#   bash benchmarks/gpu_protocol.sh --results DIR                # JSON and page (BENCHMARKS-gpu.md) in DIR
#   bash benchmarks/gpu_protocol.sh --dry-run [--results DIR]    # the same steps on a CPU, tiny (`gpu-dry`:
#                                                                # digits, 1 epoch, 2 trials; CI runs it)
#
# The dry run writes to DIR (default: a new folder under /tmp), never to benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DRY=0
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --results) [ $# -ge 2 ] || { echo "gpu_protocol.sh: --results needs a folder" >&2; exit 2; }
               RESULTS=$2; shift ;;
    *) echo "usage: bash benchmarks/gpu_protocol.sh [--dry-run] [--results DIR]" >&2; exit 2 ;;
  esac
  shift
done

PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if [ "$DRY" = 1 ]; then
  P=gpu-dry
  RESULTS=${RESULTS:-$(mktemp -d /tmp/autokd-gpu-dry.XXXXXX)}
  export AUTOKD_OFFLINE=1 AUTOKD_HOME=$RESULTS/home   # digits ship with scikit-learn: nothing to fetch
else
  P=gpu
  $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu protocol: no CUDA GPU on this machine')" \
    || exit 2
fi
if [ -n "$RESULTS" ]; then PAGE=$RESULTS/BENCHMARKS-$P.md; else RESULTS=benchmarks/results; PAGE=benchmarks/BENCHMARKS.md; fi
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 RAY_ADDRESS=local
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}   # autokd from this checkout
say() { echo "$(date +%H:%M:%S) gpu protocol ($P): $*"; }
say "results in $RESULTS"
$PY -c "import platform, torch; print('python', platform.python_version(), '| torch', torch.__version__, \
'| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

step() {  # step NAME COMMAND...: once (a marker file in the results folder); a failure is reported, not fatal
  local name=$1
  shift
  [ -f "$RESULTS/.done-$name" ] && { say "$name: done in an earlier run"; return 0; }
  say "$name"
  local t0=$SECONDS
  "$@"
  local rc=$?
  say "$name: exit $rc after $(( SECONDS - t0 )) s"
  [ $rc = 0 ] && touch "$RESULTS/.done-$name"
  return 0
}
RUN=(benchmarks/run.py --protocol "$P" --results "$RESULTS")
# the dry run only collects them: on a CPU their CUDA tests skip, and the test suite runs the rest itself
TESTS=(tests/test_train_device.py); [ "$DRY" = 1 ] && TESTS+=(--collect-only)
step tests $PY -m pytest -q -p no:cacheprovider "${TESTS[@]}"
step teacher $PY "${RUN[@]}" teacher --threads "$(( $(nproc) < 4 ? $(nproc) : 4 ))"   # 4, or fewer CPUs
step gpu $PY "${RUN[@]}" gpu
# table 1's five search arms, one search after the other, each with `parallel` trials on the GPU at once
step search $PY "${RUN[@]}" search --jobs 1 --arms joint random random-ladder prune-only distill-only
step latency $PY "${RUN[@]}" latency
$PY benchmarks/make_tables.py --results "$RESULTS" --out "$PAGE"
missing=$(for s in tests teacher gpu search latency; do [ -f "$RESULTS/.done-$s" ] || echo -n " $s"; done)
[ -z "$missing" ] || { say "not finished:$missing (run the script again to retry them)"; exit 1; }
say "every step ran; the page: $PAGE"
