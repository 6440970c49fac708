"""Every test runs offline with its own AUTOKD_HOME, so nothing touches ~/.cache or the network."""
from __future__ import annotations

import pytest


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
