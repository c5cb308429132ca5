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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs) owned by this test process; yields its GCS address.

    Started in-process (``ray.init``) so that ``ray.shutdown()`` stops exactly this cluster and no
    other on the machine. Other processes (a CLI under test, the executor) connect with the address.
    """
    pytest.importorskip("ray", reason="ray is not installed: pip install 'datacomp[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API server (moto's server mode) on 127.0.0.1, with the AWS_* variables that s3fs,
    pyarrow and subprocesses need to reach it. Yields ``{"endpoint_url": ...}``."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (dev requirements)")
    pytest.importorskip("s3fs", reason="s3fs is not installed: pip install 'datacomp[remote]'")
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {"endpoint_url": endpoint}
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket on the test S3 server; yields ``s3://<bucket>``."""
    import re

    import s3fs

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{_free_port()}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_server["endpoint_url"])
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}"
