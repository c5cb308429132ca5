import subprocess
import sys

import pytest

from datacomp.errors import DataCompError
from datacomp.scales import available_scales, get_scale

# The original scale_configs.py values (batch, lr, samples seen, warmup, model, beta2).
ORIGINAL = {
    "debug": (1024, 1e-4, 128_000, 500, "ViT-B-32", None),
    "small": (4096, 5e-4, 12_800_000, 500, "ViT-B-32", None),
    "medium": (4096, 5e-4, 128_000_000, 500, "ViT-B-32", None),
    "large": (8192, 5e-4, 1_280_000_000, 500, "ViT-B-16", None),
    "xlarge": (90112, 1e-3, 12_800_000_000, 10_000, "ViT-L-14", 0.95),
}


@pytest.mark.parametrize("name", list(ORIGINAL))
def test_real_scales_match_original(name):
    s = get_scale(name)
    got = (s.batch_size, s.learning_rate, s.train_num_samples, s.warmup, s.model, s.beta2)
    assert got == ORIGINAL[name]
    cfg = s.original_config()
    assert cfg["model"] == ORIGINAL[name][4] and ("beta2" in cfg) == (name == "xlarge")


def test_tiny_scale_is_embedded_and_listed_first():
    assert available_scales()[0] == "tiny"
    t = get_scale("tiny")
    assert t.embedded and t.batch_size == 128 and t.train_num_samples == 51_200 and t.steps == 400


def test_unknown_scale_lists_valid_ones():
    valid = "tiny, debug, small, medium, large, xlarge"
    with pytest.raises(DataCompError, match=f"unknown scale 'huge'.*{valid}"):
        get_scale("huge")


def test_scales_command_prints_table():
    r = subprocess.run([sys.executable, "-m", "datacomp", "scales"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "90,112" in r.stdout and "ViT-L-14" in r.stdout and "12,800,000,000" in r.stdout
