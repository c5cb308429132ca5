"""Two processes (torchrun, gloo on CPU) keep the global batch and step count of one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from test_train import SMALL, make_shards

SCRIPT = textwrap.dedent("""
    from datacomp.train import TrainConfig, train
    train({data!r}, {out!r}, {name!r}, TrainConfig.from_dict({cfg!r}), progress=False)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ci
def test_one_and_two_processes_same_steps_and_global_batch(tmp_path):
    from datacomp.train import train

    data = tmp_path / "shards"
    make_shards(data, n_shards=2, per_shard=100)
    cfg = replace(SMALL, num_checkpoints=1, train_num_samples=64)
    one = train(str(data), tmp_path / "out", "p1", cfg, progress=False, threads=1)  # plain single process
    records = {1: json.loads(one.record.read_text())}
    for nproc in (2,):
        script = tmp_path / f"run{nproc}.py"
        script.write_text(SCRIPT.format(data=str(data), out=str(tmp_path / "out"), name=f"p{nproc}", cfg=cfg.to_dict()))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        records[nproc] = json.loads((tmp_path / "out" / f"p{nproc}" / "train_record.json").read_text())
    one, two = records[1]["counts"], records[2]["counts"]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (one["per_device_batch"], two["per_device_batch"]) == (32, 16)
    for key in ("steps", "global_batch", "samples_seen"):
        assert one[key] == two[key]
    assert (one["steps"], one["global_batch"]) == (2, 32)
