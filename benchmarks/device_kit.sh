#!/usr/bin/env bash
# The device kit, on a CPU machine with PyPI: the wheels the lent H200 lacks for autokd's search,
# export and benchmarks (benchmarks/device_kit.txt, for its Python 3.12), downloaded into .kit/wheels
# and packed into .kit/part1 (.kit/part2, ...), each small enough for one device call (64 MiB with
# the working tree); then it prints the device calls to make, in order. See benchmarks/README.md.
#
#   bash benchmarks/device_kit.sh          # lean: Ray without its Java jars -> one part, one call
#   bash benchmarks/device_kit.sh --full   # the wheels as downloaded -> two parts, two calls
#
# The download is skipped when .kit/wheels holds every pinned wheel. .kit/ is git-ignored, so it
# travels only where a call names it in `carry`; it must lie in the checkout that the device tool
# sends (the session's own checkout, also when a helper works in another worktree).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

$PY benchmarks/device_kit.py download
$PY benchmarks/device_kit.py pack "$@"
