"""Real models on real pools: open_clip specs resolved through open_clip's own factory and cache.

Offline: a real ViT-B-32 (open_clip's architecture, random init) is saved to a local checkpoint and
used by path (``ViT-B-32:/path``), and laid out like the Hugging Face hub cache to be used as
``hf-hub:org/name`` with ``HF_HUB_OFFLINE=1``. Embeddings are checked against open_clip's own
encode calls on the same images, one at a time.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp.errors import DataCompError

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

SRC = Path(__file__).resolve().parent.parent / "src"
N = 5
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A ViT-B-32 with fixed random weights as a safetensors checkpoint, plus the model itself."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    model.eval()
    path = root / "vit_b32.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A small BYOD pool (no world marker): N 224-px images in one shard, captions in one parquet."""
    from PIL import Image

    root = tmp_path_factory.mktemp("byod")
    (root / "shards").mkdir()
    (root / "metadata").mkdir()
    rng = np.random.default_rng(0)
    uids, texts, images = [], [], []
    with tarfile.open(root / "shards" / "00000000.tar", "w") as tar:
        for i in range(N):
            arr = (rng.random((224, 224, 3)) * 255 * (i + 1) / N).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "PNG")
            uid = f"{0xAB00 + i:032x}"
            for ext, data in (("png", buf.getvalue()), ("json", json.dumps({"uid": uid}).encode())):
                info = tarfile.TarInfo(f"{i:012d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            uids.append(uid)
            texts.append(f"a photo number {i}")
            images.append(buf.getvalue())
    pq.write_table(pa.table({"uid": uids, "text": texts}), root / "metadata" / "part0.parquet")
    return root, uids, texts, images


def _direct(model, images: list[bytes], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own preprocessing and encoders, one sample at a time."""
    from PIL import Image

    preprocess = open_clip.image_transform(224, is_train=False)  # what create_model_and_transforms gives ViT-B-32
    tok = open_clip.get_tokenizer("ViT-B-32")
    img, txt = [], []
    with torch.no_grad():
        for b, t in zip(images, texts):
            x = preprocess(Image.open(io.BytesIO(b)).convert("RGB"))[None]
            img.append(torch.nn.functional.normalize(model.encode_image(x), dim=-1)[0].numpy())
            txt.append(torch.nn.functional.normalize(model.encode_text(tok([t])), dim=-1)[0].numpy())
    return np.stack(img), np.stack(txt)


@pytest.fixture(scope="module")
def direct(vit, pool):
    _, model = vit
    _, _, texts, images = pool
    return _direct(model, images, texts)


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "datacomp", *args], capture_output=True, text=True, env=e,
                          timeout=600)


def test_checkpoint_path_spec_loads_the_weights(vit):
    from datacomp.models import resolve_model

    path, model = vit
    m, preprocess, tokenizer = resolve_model(f"ViT-B-32:{path}", device="cpu")
    want = model.state_dict()
    got = m.state_dict()
    assert set(got) == set(want)
    for k in ("visual.conv1.weight", "token_embedding.weight", "text_projection"):
        assert torch.equal(got[k], want[k])
    assert tokenizer(["a"]).shape == (1, 77) and preprocess.transforms[0].size == 224


@pytest.mark.slow
@pytest.mark.ci  # real ViT-B-32 through the CLI in a subprocess
def test_embed_cli_with_a_checkpoint_matches_open_clip(vit, pool, direct, tmp_path):
    path, _ = vit
    root, uids, _, _ = pool
    out = tmp_path / "emb"
    r = _cli(["embed", "--metadata-dir", str(root / "metadata"), "--shards", str(root / "shards"),
              "--output-dir", str(out), "--model", f"b32=ViT-B-32:{path}", "--workers", "1"])
    assert r.returncode == 0, r.stderr
    z = np.load(out / "part0.npz")
    assert sorted(z.files) == ["b32_img", "b32_txt"]
    img, txt = direct
    np.testing.assert_allclose(z["b32_img"].astype(np.float32), img, atol=3e-3)
    np.testing.assert_allclose(z["b32_txt"].astype(np.float32), txt, atol=3e-3)
    t = pq.read_table(out / "part0.parquet")
    assert t["uid"].to_pylist() == uids
    np.testing.assert_allclose(t["clip_b32_similarity_score"].to_numpy(), np.einsum("ij,ij->i", img, txt),
                               atol=3e-3)


def _hub_cache(root: Path, weights: Path, repo: str = "testorg/vit-b-32-random") -> Path:
    """A directory laid out like the Hugging Face hub cache, holding an open_clip model."""
    cache = root / "hub"
    d = cache / f"models--{repo.replace('/', '--')}"
    snap = d / "snapshots" / REV
    snap.mkdir(parents=True)
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text(REV)
    (d / "blobs").mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("ViT-B-32"),
           "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}
    (snap / "open_clip_config.json").write_text(json.dumps(cfg))
    blob = d / "blobs" / "weights"
    os.link(weights, blob)
    (snap / "open_clip_model.safetensors").symlink_to(os.path.relpath(blob, snap))
    return cache


@pytest.mark.slow
@pytest.mark.ci  # real ViT-B-32 through the CLI in a subprocess
def test_hf_hub_spec_from_a_local_hub_cache_offline(vit, pool, direct, tmp_path):
    path, _ = vit
    root, _, _, _ = pool
    cache = _hub_cache(tmp_path, path)
    out = tmp_path / "emb"
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hfhome")}
    r = _cli(["embed", "--metadata-dir", str(root / "metadata"), "--shards", str(root / "shards"),
              "--output-dir", str(out), "--model", "b32=hf-hub:testorg/vit-b-32-random", "--workers", "1"], env)
    assert r.returncode == 0, r.stderr
    img, txt = direct
    z = np.load(out / "part0.npz")
    np.testing.assert_allclose(z["b32_img"].astype(np.float32), img, atol=3e-3)
    np.testing.assert_allclose(z["b32_txt"].astype(np.float32), txt, atol=3e-3)
    # An id the cache lacks, and a pretrained tag never downloaded: one line each, no traceback.
    for spec in ("hf-hub:testorg/not-there", "ViT-B-32:openai"):
        r = _cli(["embed", "--metadata-dir", str(root / "metadata"), "--shards", str(root / "shards"),
                  "--output-dir", str(tmp_path / "x"), "--model", f"b32={spec}", "--workers", "1"], env)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and spec.split(":")[0] in errors[0], r.stderr


def test_embed_refuses_a_non_world_pool_without_model(pool, tmp_path):
    root, _, _, _ = pool
    r = _cli(["embed", "--metadata-dir", str(root / "metadata"), "--shards", str(root / "shards"),
              "--output-dir", str(tmp_path / "o")])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--model" in r.stderr
    assert not (tmp_path / "o").exists()


def test_only_a_world_pool_defaults_to_the_reference_models(tmp_path):
    from datacomp.artifacts import write_world_marker
    from datacomp.filters.embed import REFERENCE_SPECS, parse_models

    meta = tmp_path / "pool" / "metadata"
    meta.mkdir(parents=True)
    with pytest.raises(DataCompError, match="--model"):
        parse_models(None, metadata_dir=meta)
    write_world_marker(meta, tmp_path / "assets")
    assert parse_models(None, metadata_dir=meta) == REFERENCE_SPECS
    assert [m.name for m in REFERENCE_SPECS] == ["datacomp-ref-b32", "datacomp-ref-l14"]


@pytest.mark.parametrize("spec, msg", [
    ("ViT-B-32", "no weights"),
    ("ViT-B-32:not_a_tag", "unknown pretrained tag"),
    ("ViT-B-32:/no/such/file.pt", "checkpoint not found"),
    ("Not-A-Model:openai", "unknown model"),
])
def test_bad_specs_are_one_line(spec, msg):
    from datacomp.models import resolve_model

    with pytest.raises(DataCompError, match=msg) as e:
        resolve_model(spec, device="cpu")
    assert "\n" not in str(e.value)


def test_reference_models_by_name():
    from datacomp.models import load_reference, resolve_model

    lm = resolve_model("datacomp-ref-b32")
    assert lm is load_reference("b32")


def test_evaluate_takes_a_spec_with_a_checkpoint_path(vit):
    from datacomp.evaluate.model import resolve_model as evaluate_model
    from datacomp.io import sha256_file

    path, _ = vit
    spec = evaluate_model(f"ViT-B-32:{path}")
    assert spec.name == "ViT-B-32" and spec.checkpoint == path
    assert spec.fingerprint == f"ViT-B-32|sha256:{sha256_file(path)}"
    assert evaluate_model("ViT-B-32:openai").fingerprint == "ViT-B-32:openai|pretrained"


def test_build_targets_embeds_reference_images_with_a_named_model(tmp_path):
    """`filter build-targets`: the image-based filter's reference embeddings from images and a model spec."""
    from PIL import Image

    from datacomp.cli import main
    from datacomp.filters.clusters import load_matrix
    from datacomp.models import load_reference

    rng = np.random.default_rng(1)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    paths = []
    for i in range(4):
        p = tmp_path / "imgs" / ("a" if i % 2 else "") / f"{i}.png"
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    out = tmp_path / "targets.npy"
    assert main(["filter", "build-targets", "--images", str(tmp_path / "imgs"), "--model", "datacomp-ref-l14",
                 "--output", str(out)]) == 0
    got = load_matrix(out, "targets")
    lm = load_reference("l14")
    with torch.no_grad():
        x = torch.stack([lm.preprocess_val(Image.open(p).convert("RGB")) for p in sorted(paths)])
        want = [torch.nn.functional.normalize(lm.model.encode_image(x[i : i + 1]), dim=-1)[0].numpy()
                for i in range(len(paths))]
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)
    assert main(["filter", "build-targets", "--images", str(tmp_path / "imgs"), "--model", "ViT-B-32",
                 "--output", str(tmp_path / "t2.npy")]) == 2  # a bare architecture (random weights) is refused
