#!/usr/bin/env bash
# autokd's training path under the oldest PyTorch it supports (pyproject.toml: torch>=2.11,
# torchvision>=0.26; `make install` pins a newer one): a throwaway venv with torch 2.11.0 +
# torchvision 0.26.0 from PyPI in front of .venv's other packages, then the tests of the training,
# distillation, data, pruning, export, model and trial paths. Raise the floor in pyproject.toml and
# OLDEST_TORCH together.
#
#   bash .ci/torch_oldest.sh        # after `make install`; a few minutes, about 0.5 GB download
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OLDEST_VENV=${OLDEST_VENV:-.venv-torch-oldest}
OLDEST_TORCH=${OLDEST_TORCH:-"torch==2.11.0 torchvision==0.26.0"}

BASE=$($VENV/bin/python -c "import sys; print(sys.base_prefix)")
[ -x "$OLDEST_VENV/bin/python" ] || "$BASE/bin/python3" -m venv "$OLDEST_VENV"
# its own torch first; .venv's site-packages after it (numpy, optuna, ray, ... and the CUDA libraries
# PyPI's torch build loads at import)
$OLDEST_VENV/bin/python -m pip install -q --no-deps $OLDEST_TORCH
SITE=$($OLDEST_VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
$VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$SITE/zz-autokd-venv.pth"
if ! $OLDEST_VENV/bin/python -c "import torch" 2>/dev/null; then  # .venv holds a CPU-only torch: no CUDA libraries
  $OLDEST_VENV/bin/python -m pip install -q $OLDEST_TORCH
fi
$OLDEST_VENV/bin/python -c "import torch, torchvision; print('oldest torch:', torch.__version__, torchvision.__version__)"
PYTHONPATH=$(pwd) $OLDEST_VENV/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_train_device.py tests/test_distill.py tests/test_data.py tests/test_prune.py tests/test_export.py \
  tests/test_models.py tests/test_trial.py
