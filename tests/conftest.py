"""Every test runs offline with its own AUTOKD_HOME, so nothing touches ~/.cache or the network."""
from __future__ import annotations

import pytest
import torch

# One intra-op thread: the suite's models are tiny, and on a 2-core machine a second thread only
# fights with Ray workers and other processes (seen: 100x slower forwards under contention).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("autokd_home")
    monkeypatch.setenv("AUTOKD_HOME", str(home))
    monkeypatch.setenv("AUTOKD_OFFLINE", "1")
    yield home


@pytest.fixture(scope="session")
def digits():
    from autokd.data import load_dataset

    return load_dataset("digits", seed=0)
