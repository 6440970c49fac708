#!/usr/bin/env bash
# autokd's training path under the lent device's PyTorch (2.11.0, what the H200 machine has; CI's
# .venv pins 2.14.1): a throwaway venv with torch 2.11.0 + torchvision 0.26.0 from PyPI (the cu130
# build, the device's, which runs on a CPU too) in front of .venv's other packages, then the tests of
# the training, distillation, pruning, export and trial paths. The proof that nothing autokd needs is
# newer than the device's torch (benchmarks/README.md).
#
#   bash .ci/torch_device.sh        # after `make install`; about 2-3 minutes, 0.5 GB download
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DEVICE_VENV=${DEVICE_VENV:-.venv-torch-device}
DEVICE_TORCH=${DEVICE_TORCH:-"torch==2.11.0 torchvision==0.26.0"}

BASE=$($VENV/bin/python -c "import sys; print(sys.base_prefix)")
[ -x "$DEVICE_VENV/bin/python" ] || "$BASE/bin/python3" -m venv "$DEVICE_VENV"
# its own torch first; .venv's site-packages after it (numpy, optuna, ray, ... and the CUDA libraries
# torch's cu130 build loads at import)
$DEVICE_VENV/bin/python -m pip install -q --no-deps $DEVICE_TORCH
SITE=$($DEVICE_VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
$VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$SITE/zz-autokd-venv.pth"
if ! $DEVICE_VENV/bin/python -c "import torch" 2>/dev/null; then  # .venv holds a CPU-only torch: no CUDA libraries
  $DEVICE_VENV/bin/python -m pip install -q $DEVICE_TORCH
fi
$DEVICE_VENV/bin/python -c "import torch, torchvision; print('device torch:', torch.__version__, torchvision.__version__)"
PYTHONPATH=$(pwd) $DEVICE_VENV/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_train_device.py tests/test_distill.py tests/test_data.py tests/test_prune.py tests/test_export.py \
  tests/test_models.py tests/test_trial.py
