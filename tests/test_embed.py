"""`datacomp embed` on a BYOD pool built from the embedded world, and `datacomp dedup` finding planted
evaluation images in it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datacomp.pool.shards import iter_tar_samples

N_POOL, N_PLANTED = 40, 6


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _reencode(png: bytes) -> bytes:
    """A near-duplicate: the evaluation image re-encoded as JPEG."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def byod(world, tmp_path_factory):
    """40 world samples + 6 re-encoded evaluation images + 1 row without an image; metadata has no npz."""
    root = tmp_path_factory.mktemp("byod")
    (root / "shards").mkdir()
    (root / "metadata").mkdir()
    rows, planted, images = [], [], {}
    first = sorted(Path(world.shards).glob("*.tar"))[0]
    with tarfile.open(root / "shards" / "00000000.tar", "w") as tar:
        for i, (key, s) in enumerate(iter_tar_samples(first)):
            if i == N_POOL:
                break
            meta = json.loads(s["json"])
            _add(tar, f"{key}.jpg", s["jpg"])
            _add(tar, f"{key}.json", s["json"])
            rows.append((meta["uid"], meta["caption"]))
            images[meta["uid"]] = s["jpg"]
        eval_tar = sorted((Path(world.eval_suite) / "embedded-shapes" / "test").glob("*.tar"))[0]
        for j, (_, s) in enumerate(iter_tar_samples(eval_tar)):
            if j == N_PLANTED:
                break
            uid = f"{0xEE00 + j:032x}"
            jpg = _reencode(s["png"])
            key = f"{900000 + j:012d}"
            _add(tar, f"{key}.jpg", jpg)
            _add(tar, f"{key}.json", json.dumps({"uid": uid}).encode())
            rows.append((uid, "a photo of a shape"))
            planted.append(uid)
            images[uid] = jpg
    rows.append((f"{0xDEAD:032x}", "no image for this row"))
    uids, texts = zip(*rows)
    pq.write_table(pa.table({"uid": list(uids), "text": list(texts), "url": ["u"] * len(uids),
                             "original_width": [256] * len(uids), "original_height": [256] * len(uids)}),
                   root / "metadata" / "part0.parquet")
    from datacomp.filters.embed import embed_pool, parse_models

    # A BYOD pool (no world marker) names its models; here the world's reference models, by name.
    models = parse_models(["b32=datacomp-ref-b32", "l14=datacomp-ref-l14"])
    summary = embed_pool(root / "metadata", root / "shards", root / "embedded", models=models, workers=1,
                         progress=False)
    return root, summary, list(uids), list(texts), planted, images


def test_embed_writes_aligned_npz_and_scores(byod):
    root, summary, uids, texts, _, images = byod
    assert summary["rows"] == len(uids) and summary["with_image"] == len(uids) - 1
    t = pq.read_table(root / "embedded" / "part0.parquet")
    assert t["uid"].to_pylist() == uids
    z = np.load(root / "embedded" / "part0.npz")
    assert sorted(z.files) == ["b32_img", "b32_txt", "l14_img", "l14_txt"]
    for k in z.files:
        assert z[k].dtype == np.float16 and z[k].shape[0] == len(uids)
    for key in ("b32", "l14"):
        img, txt = z[f"{key}_img"].astype(np.float32), z[f"{key}_txt"].astype(np.float32)
        score = t[f"clip_{key}_similarity_score"].to_numpy(zero_copy_only=False)
        assert np.isnan(score[-1]) and not img[-1].any()  # the row without an image
        np.testing.assert_allclose(score[:-1], np.einsum("ij,ij->i", img, txt)[:-1], atol=2e-3)
        np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=2e-3)


def test_embed_matches_direct_model_calls(byod):
    """Row by row: the reference model's own preprocessing and encoders, one sample at a time."""
    import torch

    from datacomp.models import load_reference

    root, _, uids, texts, _, images = byod
    z = np.load(root / "embedded" / "part0.npz")
    lm = load_reference("l14")
    with torch.no_grad():
        for i in (0, 7, N_POOL + 1):
            x = lm.preprocess_val(Image.open(io.BytesIO(images[uids[i]])).convert("RGB"))[None]
            e = torch.nn.functional.normalize(lm.model.encode_image(x).float(), dim=-1)[0].numpy()
            np.testing.assert_allclose(z["l14_img"][i].astype(np.float32), e, atol=2e-3)
            tt = torch.nn.functional.normalize(lm.model.encode_text(lm.tokenizer([texts[i]])).float(), dim=-1)
            np.testing.assert_allclose(z["l14_txt"][i].astype(np.float32), tt[0].numpy(), atol=2e-3)


def test_dedup_finds_planted_eval_images_and_filters_exclude_them(byod, world, tmp_path):
    from datacomp.filters import run_filter
    from datacomp.filters.dedup import dedup
    from datacomp.uids import hex_to_uids, read_subset, uids_to_hex

    root, _, uids, _, planted, _ = byod
    out = tmp_path / "contaminated.npy"
    from datacomp.filters.embed import ModelSpec

    # JPEG re-encoding moves a 32-px image's reference embedding down to cosine 0.93 (0.90 over the first
    # 40 shapes images), so the planted copies are found at 0.9, below the default 0.95
    s = dedup(root / "embedded", world.eval_suite, out, tasks=["embedded/shapes", "embedded/colours"], workers=1,
              model=ModelSpec("l14", "datacomp-ref-l14"), progress=False, threshold=0.9)
    flagged = set(uids_to_hex(read_subset(out)).tolist())
    assert set(planted) <= flagged and s["flagged_per_task"].get("embedded-shapes", 0) >= len(planted)
    # Independently: a row is flagged iff its best cosine to any evaluation image reaches the threshold.
    ref = np.load(out.with_suffix(".eval.npz"))["emb"]  # kept beside the output for reuse
    assert ref.shape[0] == s["eval_images"]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    emb = np.load(root / "embedded" / "part0.npz")["l14_img"].astype(np.float32)
    want = set()
    for u, e in zip(uids, emb):
        n = np.linalg.norm(e)
        if n and max(float(r @ (e / n)) for r in ref) >= 0.9:
            want.add(u)
    assert flagged == want
    s2 = run_filter("no_filter", root / "embedded", tmp_path / "clean.npy", exclude_uids=out, workers=1,
                    progress=False)
    kept = set(uids_to_hex(read_subset(tmp_path / "clean.npy")).tolist())
    assert not kept & set(planted) and s2["removed"]["excluded"] == len(flagged)
    assert hex_to_uids(np.array(planted)).size == N_PLANTED


@pytest.mark.s3
def test_embed_from_and_to_s3_matches_local(byod, s3_bucket):
    """The pool's metadata and shards in a bucket, the embedded metadata (and the work folder) written
    there: the same parquet and npz bytes as the local run."""
    from datacomp.filters.embed import embed_pool, parse_models
    from datacomp.storage import as_location

    root = byod[0]
    for sub in ("metadata", "shards"):
        for p in sorted((root / sub).iterdir()):
            if p.is_file():
                as_location(f"{s3_bucket}/pool/{sub}/{p.name}").upload(p)
    models = parse_models(["b32=datacomp-ref-b32", "l14=datacomp-ref-l14"])
    summary = embed_pool(f"{s3_bucket}/pool/metadata", f"{s3_bucket}/pool/shards", f"{s3_bucket}/embedded",
                         models=models, workers=1, progress=False)
    assert summary["rows"] == byod[1]["rows"] and summary["with_image"] == byod[1]["with_image"]
    out = as_location(f"{s3_bucket}/embedded")
    assert sorted(p.name for p in out.ls()) == ["part0.npz", "part0.parquet"]  # the work folder is gone
    for name in ("part0.npz", "part0.parquet"):
        assert (out / name).read_bytes() == (root / "embedded" / name).read_bytes(), name
