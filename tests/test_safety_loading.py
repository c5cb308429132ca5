"""Safe loading: user-supplied model files and info.pkl never run code; bad ones are one line.

Each payload is a real pickle whose ``__reduce__`` asks the unpickler to call ``os.system`` (writing
a marker file). A reader that unpickles freely creates the marker before any error; a safe one refuses
with one line and the marker never appears.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from datacomp.errors import DataCompError


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def test_payload_really_runs_when_unpickled(tmp_path, marker):
    """The payload is live: plain pickle.load runs it (so the tests below can fail)."""
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"a": _Payload(marker)}))
    pickle.loads(p.read_bytes())  # noqa: S301 - proving the payload works
    assert marker.exists()


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, path)
    return path


def test_model_checkpoint_payload_does_not_run(tmp_path, marker):
    """models.load_state_dict is what evaluate, embed and dedup --checkpoint load user checkpoints with."""
    from datacomp.models import load_model, load_state_dict

    ckpt = _evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(DataCompError) as e:
        load_state_dict(ckpt)
    msg = _one_line(e)
    assert str(ckpt) in msg and "refused" in msg
    with pytest.raises(DataCompError):
        load_model("datacomp-tiny-rn", ckpt)
    assert not marker.exists()


def test_embed_checkpoint_payload_does_not_run(tmp_path, marker):
    from datacomp.filters.embed import load, parse_models

    ckpt = _evil_checkpoint(tmp_path / "evil.pt", marker)
    (spec,) = parse_models(["t=datacomp-tiny-rn"], [f"t={ckpt}"])
    with pytest.raises(DataCompError) as e:
        load(spec)
    _one_line(e)
    assert not marker.exists()


def test_train_resume_checkpoint_payload_does_not_run(tmp_path, marker):
    from datacomp.train import train
    from test_train import SMALL, make_shards

    data = tmp_path / "shards"
    make_shards(data, n_shards=1, per_shard=8)
    ckpt_dir = tmp_path / "out" / "x" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    _evil_checkpoint(ckpt_dir / "epoch_latest.pt", marker)
    with pytest.raises(DataCompError) as e:
        train(str(data), tmp_path / "out", "x", SMALL, progress=False)
    assert "epoch_latest.pt" in _one_line(e)
    assert not marker.exists()


def test_info_pkl_payload_does_not_run(tmp_path, marker):
    from datacomp.evaluate.model import resolve_model

    d = tmp_path / "run"
    d.mkdir()
    info = {"scale": "small", "checkpoint": _Payload(marker), "scale_config": {"model": "ViT-B-32"}}
    (d / "info.pkl").write_bytes(pickle.dumps(info))
    with pytest.raises(DataCompError) as e:
        resolve_model(train_output_dir=d)
    msg = _one_line(e)
    assert "info.pkl" in msg and "system" in msg
    assert not marker.exists()


def test_info_pkl_from_original_and_ours_still_loads(tmp_path):
    """The restricted reader accepts what train.py (paths, nested dicts, numbers) writes."""
    from datacomp.evaluate.model import resolve_model
    from datacomp.train.checkpoint import read_info_pkl, write_info_pkl

    d = tmp_path / "run"
    (d / "checkpoints").mkdir(parents=True)
    ckpt = d / "checkpoints" / "epoch_latest.pt"
    ckpt.write_bytes(b"weights")
    cfg = {"model": "ViT-B-32", "batch_size": 4096, "learning_rate": 5e-4, "train_num_samples": 12_800_000,
           "warmup": 500, "beta2": None, "grad_clip_norm": None}
    write_info_pkl(d / "info.pkl", "small", ckpt, cfg, "/data/shards")
    info = read_info_pkl(d / "info.pkl")
    assert info == {"scale": "small", "checkpoint": ckpt, "scale_config": cfg, "data_dir": Path("/data/shards")}
    spec = resolve_model(train_output_dir=d)
    assert (spec.name, spec.checkpoint, spec.scale) == ("ViT-B-32", ckpt, "small")
    # protocol 0 and an OrderedDict / tuple / set mix load as well
    import collections

    (d / "info.pkl").write_bytes(pickle.dumps({"scale_config": collections.OrderedDict(model="RN50"),
                                               "checkpoint": str(ckpt), "t": (1, 2.5), "s": {3}}, protocol=0))
    assert resolve_model(train_output_dir=d).name == "RN50"


@pytest.mark.parametrize("body", [b"", b"garbage", pickle.dumps(["not", "a", "dict"])])
def test_bad_info_pkl_is_one_line(tmp_path, body):
    from datacomp.evaluate.model import resolve_model

    d = tmp_path / "run"
    d.mkdir()
    (d / "info.pkl").write_bytes(body)
    with pytest.raises(DataCompError) as e:
        resolve_model(train_output_dir=d)
    assert "info.pkl" in _one_line(e)


def test_checkpoint_of_another_architecture_is_one_line(tmp_path):
    import torch

    from datacomp.models import load_model

    other = load_model("datacomp-ref-l14")
    ckpt = tmp_path / "l14.pt"
    torch.save({"state_dict": other.model.state_dict()}, ckpt)
    with pytest.raises(DataCompError) as e:
        load_model("datacomp-ref-b32", ckpt)
    msg = _one_line(e)
    assert str(ckpt) in msg and "'datacomp-ref-b32'" in msg and "shape" in msg


def test_open_clip_style_checkpoint_loads_with_weights_only(tmp_path):
    """A normal open_clip checkpoint (epoch, name, state_dict with DDP prefixes, optimizer) still loads."""
    import torch

    from datacomp.models import load_model

    src = load_model("datacomp-tiny-rn")
    sd = {f"module.{k}": v for k, v in src.model.state_dict().items()}
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, ckpt)
    got = load_model("datacomp-tiny-rn", ckpt)
    a, b = src.model.state_dict(), got.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- train_record.json ---------------------------------------------------------------------------


def _record_dir(tmp_path: Path, record) -> Path:
    d = tmp_path / "run"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "epoch_latest.pt").write_bytes(b"latest")
    (d / "train_record.json").write_text(json.dumps(record))
    return d


def test_relative_checkpoint_in_record_resolves_next_to_the_record(tmp_path, monkeypatch):
    from datacomp.evaluate.model import resolve_model

    d = _record_dir(tmp_path, {"config": {"model": "RN50"}, "checkpoint": "checkpoints/epoch_2.pt"})
    (d / "checkpoints" / "epoch_2.pt").write_bytes(b"two")
    monkeypatch.chdir(tmp_path)  # the cwd is not the record's folder
    spec = resolve_model(train_output_dir=d)
    assert spec.checkpoint == d / "checkpoints" / "epoch_2.pt"


def test_missing_relative_checkpoint_in_record_is_refused(tmp_path, monkeypatch):
    from datacomp.evaluate.model import resolve_model

    d = _record_dir(tmp_path, {"config": {"model": "RN50"}, "checkpoint": "checkpoints/epoch_9.pt"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataCompError) as e:
        resolve_model(train_output_dir=d)
    assert "epoch_9.pt" in _one_line(e)


@pytest.mark.parametrize("record", [["a", "list"], "text", 3, {"config": ["x"]}])
def test_non_object_record_is_one_line(tmp_path, record):
    from datacomp.evaluate.model import resolve_model

    d = _record_dir(tmp_path, record)
    with pytest.raises(DataCompError) as e:
        resolve_model(train_output_dir=d)
    assert "train_record.json" in _one_line(e)


@pytest.mark.parametrize("body", ["[1, 2]", "{not json", '{"counts": [1]}'])
def test_finished_run_with_a_damaged_record_rewrites_it(tmp_path, body):
    """A finished run whose train_record.json is not a JSON object: the re-run rewrites it (no traceback)."""
    from dataclasses import replace

    from datacomp.train import train
    from test_train import SMALL, make_shards

    data = tmp_path / "shards"
    make_shards(data, n_shards=1, per_shard=40)
    cfg = replace(SMALL, batch_size=8, train_num_samples=16, num_checkpoints=1, shuffle_buffer=20, shuffle_initial=5)
    first = train(str(data), tmp_path / "out", "x", cfg, progress=False, threads=1)
    good = json.loads(first.record.read_text())
    first.record.write_text(body)
    again = train(str(data), tmp_path / "out", "x", cfg, progress=False, threads=1)
    rec = json.loads(again.record.read_text())
    assert isinstance(rec, dict) and rec["counts"]["steps"] == good["counts"]["steps"] == 2
    assert rec["checkpoint"] == good["checkpoint"]


# --- the user-facing command, end to end ----------------------------------------------------------


def test_evaluate_cli_refuses_payloads_in_one_line(tmp_path, marker, capsys):
    """`datacomp evaluate` with a crafted --checkpoint, and with a training folder holding a crafted
    info.pkl: exit 2, one `error:` line, nothing ran, no results written."""
    from datacomp.cli import main
    from test_evaluate import build_embedded_suite

    root = tmp_path / "suite"
    root.mkdir()
    tasks_file = build_embedded_suite(root)
    common = ["--suite", "embedded", "--data-dir", str(root), "--tasks-file", str(tasks_file),
              "--tasks", "embedded/shapes", "--no-progress"]
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    rc = main(["evaluate", "--model", "datacomp-tiny-rn", "--checkpoint", str(evil),
               "--output-dir", str(tmp_path / "o1"), *common])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1 and "evil.pt" in err, err
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_latest.pt").write_bytes(b"x")
    (run / "info.pkl").write_bytes(pickle.dumps({"scale_config": {"model": "datacomp-tiny-rn"},
                                                 "checkpoint": _Payload(marker)}))
    rc = main(["evaluate", "--train-output-dir", str(run), "--output-dir", str(tmp_path / "o2"), *common])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1 and "info.pkl" in err, err
    assert not marker.exists()
    assert not any((tmp_path / o / "eval_results.jsonl").exists() for o in ("o1", "o2"))
