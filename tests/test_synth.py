"""The embedded world: formats read back with pyarrow / numpy / webdataset, determinism, leakage, quality."""

from __future__ import annotations

import hashlib
import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp.errors import DataCompError
from datacomp.synth import KINDS, NoiseMix, make_pool
from datacomp.synth import concepts as C
from datacomp.synth.evalsuite import embedded_tasks, task_dir
from datacomp.synth.pool import DEFAULT_BASE_URL, METADATA_COLUMNS, NPZ_KEYS, metadata_schema
from datacomp.synth.render import Scenes, decode, render, sample_scenes

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _metadata(world):
    out = []
    for f in sorted(world.metadata.glob("*.parquet")):
        out.append((f, pq.read_table(f), np.load(f.with_suffix(".npz"))))
    return out


def test_metadata_parquet_and_npz_columns_dtypes_alignment(world):
    files = _metadata(world)
    assert len(files) == 4
    uids = []
    for f, t, npz in files:
        assert t.schema.equals(metadata_schema()), f
        assert tuple(t.column_names) == METADATA_COLUMNS
        assert t.schema.field("face_bboxes").type == pa.list_(pa.list_(pa.float64()))
        n = t.num_rows
        assert n == 1000
        assert sorted(npz.files) == sorted(NPZ_KEYS)
        for k in NPZ_KEYS:
            a = npz[k]
            assert a.dtype == np.float16 and a.shape[0] == n
            np.testing.assert_allclose(np.linalg.norm(a.astype(np.float32), axis=1), 1.0, atol=5e-3)
        assert npz["b32_img"].shape[1] < npz["l14_img"].shape[1]  # as 512 < 768 in CommonPool
        d = t.to_pydict()
        assert all(HEX32.match(u) for u in d["uid"])
        assert d["url"] == [f"{DEFAULT_BASE_URL}/{u}.jpg" for u in d["uid"]]
        for arch in ("b32", "l14"):
            col = t[f"clip_{arch}_similarity_score"].to_numpy()
            assert col.dtype == np.float32
            cos = np.einsum("ij,ij->i", npz[f"{arch}_img"].astype(np.float32), npz[f"{arch}_txt"].astype(np.float32))
            np.testing.assert_allclose(col, cos, atol=5e-3)
        assert all(HEX32.match(s[:32]) and len(s) == 64 for s in d["sha256"])
        assert min(d["original_width"]) > 0 and min(d["original_height"]) > 0
        for boxes in d["face_bboxes"]:
            for b in boxes:
                assert len(b) == 4 and 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1
        uids += d["uid"]
    assert len(set(uids)) == len(uids) == 4000
    assert sum(len(b) > 0 for _, t, _ in files for b in t["face_bboxes"].to_pylist()) > 50


def test_shards_read_with_webdataset_match_metadata(world):
    import webdataset as wds

    meta = {}
    for _, t, _ in _metadata(world):
        for row in t.to_pylist():
            meta[row["uid"]] = row
    tars = sorted(world.shards.glob("*.tar"))
    assert [p.name for p in tars] == [f"{i:08d}.tar" for i in range(4)]
    seen = 0
    for tar in tars:
        ds = wds.WebDataset(str(tar), shardshuffle=False)
        keys = []
        for s in ds:
            assert {"jpg", "txt", "json"} <= set(s)
            j = json.loads(s["json"])
            m = meta[j["uid"]]
            assert hashlib.sha256(s["jpg"]).hexdigest() == j["sha256"] == m["sha256"]
            assert s["txt"].decode() == m["text"] == j["caption"]
            assert j["url"] == m["url"] and j["key"] == s["__key__"] and j["status"] == "success"
            assert (j["original_width"], j["original_height"]) == (m["original_width"], m["original_height"])
            assert j["face_bboxes"] == m["face_bboxes"] and (j["width"], j["height"]) == (32, 32)
            assert decode(s["jpg"]).shape == (32, 32, 3)
            keys.append(s["__key__"])
        sp = pq.read_table(tar.with_suffix(".parquet"))
        assert sp.column_names[:4] == ["uid", "face_bboxes", "caption", "url"]
        assert sp["key"].to_pylist() == keys and set(sp["status"].to_pylist()) == {"success"}
        stats = json.loads(tar.with_name(tar.stem + "_stats.json").read_text())
        assert stats["successes"] == stats["count"] == len(keys)
        seen += len(keys)
    assert seen == len(meta)


def test_ground_truth_and_noise_shares(world):
    truth = pa.concat_tables([pq.read_table(f) for f in sorted(world.truth.glob("*.parquet"))])
    kinds = np.array(truth["kind"].to_pylist())
    shares = NoiseMix().shares()
    for i, k in enumerate(KINDS):
        assert abs(np.mean(kinds == k) - shares[i]) < 0.03, k
    lang = np.array(truth["language"].to_pylist())
    assert set(lang[kinds == "non_english"]) == set(C.LANGUAGES)
    assert set(lang[kinds != "non_english"]) == {"en"}


def test_eval_suite_layout_and_registry(world):
    import webdataset as wds

    tasks = embedded_tasks()
    families = {t["family"] for t in tasks}
    assert families == {"zeroshot_classification", "retrieval", "fairness"}
    assert sum(t["aggregate"] == "imagenet_dist_shift" for t in tasks) >= 3
    assert sum(t["aggregate"] == "vtab" for t in tasks) >= 5
    for t in tasks:
        d = task_dir(world.eval_suite, t["key"])
        nshards = int((d / "test" / "nshards.txt").read_text())
        urls = [str(d / "test" / f"{i}.tar") for i in range(nshards)]
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        assert len(samples) >= 40
        for s in samples[:50]:
            from PIL import Image

            assert Image.open(io.BytesIO(s["png"])).size == (32, 32)
        if t["family"] == "retrieval":
            assert all(len(s["txt"].decode().splitlines()) >= 2 for s in samples)
            continue
        names = (d / "classnames.txt").read_text().splitlines()
        assert len(names) == t["num_classes"]
        templates = (d / "zeroshot_classification_templates.txt").read_text().splitlines()
        assert templates and all("{c}" in x for x in templates)
        labels = np.array([int(s["cls"]) for s in samples])
        assert labels.min() >= 0 and labels.max() < t["num_classes"]
        assert len(set(labels)) == t["num_classes"]
        if t["family"] == "fairness":
            meta = np.stack([np.load(io.BytesIO(s["npy"])) for s in samples])
            assert meta.dtype == np.int64 and meta.shape[1] == len(t["metadata_fields"])
            assert t["group_field"] in t["metadata_fields"] and t["main_metric"] == "acc_wg"


def test_test_images_never_in_pool(world):
    import webdataset as wds

    from datacomp.pool.shards import iter_tar_samples

    pool_bytes, pool_pixels = set(), set()
    for tar in sorted(world.shards.glob("*.tar")):
        for _, s in iter_tar_samples(tar):
            pool_bytes.add(hashlib.sha256(s["jpg"]).hexdigest())
            pool_pixels.add(hashlib.sha256(decode(s["jpg"]).tobytes()).hexdigest())
    n = 0
    for t in embedded_tasks():
        d = task_dir(world.eval_suite, t["key"])
        for tar in sorted((d / "test").glob("*.tar")):
            for s in wds.WebDataset(str(tar), shardshuffle=False):
                assert hashlib.sha256(s["png"]).hexdigest() not in pool_bytes
                assert hashlib.sha256(decode(s["png"]).tobytes()).hexdigest() not in pool_pixels
                n += 1
    assert n > 1000
    # the clean-set assets are disjoint from the evaluation images too
    assets = np.load(world.assets / "imagenet_analog_images.npy")
    shapes = task_dir(world.eval_suite, "embedded/shapes") / "test" / "0.tar"
    eval_px = {hashlib.sha256(decode(s["png"]).tobytes()).hexdigest()
               for s in wds.WebDataset(str(shapes), shardshuffle=False)}
    assert not eval_px & {hashlib.sha256(a.tobytes()).hexdigest() for a in assets}


def test_assets(world):
    emb = np.load(world.assets / "imagenet_analog_l14_img.npy")
    labels = np.load(world.assets / "imagenet_analog_labels.npy")
    assert emb.dtype == np.float32 and emb.shape[0] == labels.shape[0] and labels.dtype == np.int64
    assert set(labels.tolist()) == set(range(len(C.SHAPES)))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    npz = np.load(next(world.metadata.glob("*.npz")))
    assert emb.shape[1] == npz["l14_img"].shape[1]
    concepts = (world.assets / "concepts.txt").read_text().split()
    assert set(C.SHAPES) <= set(concepts)


def test_renderer_deterministic_and_varied():
    a = render(sample_scenes(np.random.default_rng(5), 300))
    b = render(sample_scenes(np.random.default_rng(5), 300))
    assert a.dtype == np.uint8 and a.shape == (300, 32, 32, 3)
    assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
    c = render(sample_scenes(np.random.default_rng(6), 300))
    assert not np.array_equal(a, c)
    assert len({hashlib.sha256(x.tobytes()).digest() for x in a}) == 300


def test_renderer_draws_every_concept():
    n = len(C.SHAPES) + 10
    s = Scenes(glyph=np.arange(n), colour=np.zeros(n, np.int64), count=np.ones(n, np.int64),
               size=np.ones(n, np.int64), position=np.full(n, 4), background=np.zeros(n, np.int64),
               style=np.zeros(n, np.int64), jitter=np.full((n, 32), 0.5))
    imgs = render(s).astype(np.int64)
    # every glyph is visible (red object on a muted plain background) and distinct from every other
    red = (imgs[..., 0] - imgs[..., 1] > 80).sum(axis=(1, 2))
    assert (red > 15).all()
    masks = imgs[..., 0] - imgs[..., 1] > 80
    for i in range(n):
        for j in range(i + 1, n):
            assert (masks[i] != masks[j]).sum() > 4, (i, j)
    assert len(C.COLOURS) >= 8 and len(C.BACKGROUNDS) >= 6 and len(C.SHAPES) >= 12


def test_pool_is_deterministic(tmp_path):
    def digest(d):
        out = {}
        for p in sorted(d.rglob("*")):
            if p.is_file() and not p.name.endswith("_stats.json") and ".synth_state" not in p.parts:
                out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    a = make_pool(tmp_path / "a", size=300, seed=3, workers=1, progress=False)
    make_pool(tmp_path / "b", size=300, seed=3, workers=1, progress=False)
    make_pool(tmp_path / "c", size=300, seed=4, workers=1, progress=False)
    da, db, dc = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a["samples"] == 300 and len(da) == 6  # parquet+npz, truth, tar+parquet, config
    assert da == db
    assert not set(da.values()) & set(dc.values())
    # resuming re-does nothing and a different config in the same dir is refused
    assert make_pool(tmp_path / "a", size=300, seed=3, workers=1, progress=False)["samples"] == 300
    assert digest(tmp_path / "a") == da
    with pytest.raises(DataCompError, match="other settings"):
        make_pool(tmp_path / "a", size=300, seed=5, workers=1, progress=False)


def test_noise_mix_validation():
    assert abs(NoiseMix().clean - 0.25) < 1e-9
    with pytest.raises(DataCompError, match="add up"):
        NoiseMix(non_english=0.9)
    with pytest.raises(DataCompError, match="between 0 and 1"):
        NoiseMix(junk=-0.1)


def test_cli_pool_and_eval_suite(tmp_path):
    from datacomp.cli import main

    assert main(["synth", "pool", "--out", str(tmp_path / "p"), "--size", "120", "--workers", "1",
                 "--base-url", "http://127.0.0.1:9999/x"]) == 0
    t = pq.read_table(next((tmp_path / "p" / "metadata").glob("*.parquet")))
    assert t.num_rows == 120 and t["url"][0].as_py().startswith("http://127.0.0.1:9999/x/")
    assert main(["synth", "pool", "--out", str(tmp_path / "q"), "--size", "huge"]) == 2
