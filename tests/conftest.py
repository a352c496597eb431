import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
DATA = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
if not os.path.isdir(DATA):
    DATA = os.path.abspath(os.path.join(HERE, "..", "shared", "data"))


@pytest.fixture(scope="session")
def data_dir():
    if not os.path.isdir(DATA):
        pytest.skip("shared/data not found beside the checkout")
    return DATA


@pytest.fixture(autouse=True)
def _isolate_home(tmp_path, monkeypatch):
    """Never touch the user's cache or the network from tests."""
    monkeypatch.setenv("VSR_ENGINE_HOME", str(tmp_path / "vsr_home"))
    monkeypatch.setenv("VSR_ENGINE_OFFLINE", "1")
    torch.manual_seed(0)
    np.random.seed(0)
