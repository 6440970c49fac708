"""Every test runs offline with its own AUTOKD_HOME, so nothing touches ~/.cache or the network."""
from __future__ import annotations

import os
from collections import Counter

import pytest

# One intra-op thread, here and in every process a test starts (the CLI, benchmarks, Ray nodes):
# the suite's models are tiny, and where processes outnumber cores (Ray workers, the suite's own
# workers) OpenMP threads that spin waiting for each other make a forward up to 100x slower.
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads when it loads)

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Files with the most slow tests run first, each file's tests still together and in order: with
    ``make test``'s workers (``-n 2 --dist loadfile``) the long files start first and the short ones
    fill in at the end, so no worker is left alone with a long file while the other idles."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


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
