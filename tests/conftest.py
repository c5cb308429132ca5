"""Shared fixtures. Everything runs on the CPU on small real files built under tmp paths."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The embedded test world (small pool + evaluation suite + assets), generated once per session.

    Read-only: a test that changes files must copy what it changes into its own tmp_path.
    """
    from datacomp.synth import make_test_world

    return make_test_world(tmp_path_factory.mktemp("world"))
