"""The post-DataComp methods (docs/methods/): hand-made embeddings with known answers, then the CLI on the world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datacomp.filters.methods.density import density_keep, quotas
from datacomp.filters.methods.negclip import negclip_scores
from datacomp.filters.methods.normsim import normsim
from datacomp.filters.methods.semdedup import duplicates_keep, semdedup_keep
from datacomp.uids import read_subset


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sphere(rng, n, d):
    return _unit(rng.normal(size=(n, d)))


# -- semdedup ------------------------------------------------------------------------------------------

def test_semdedup_removes_planted_duplicates_only_and_keeps_the_farthest_from_the_centroid():
    rng = np.random.default_rng(0)
    d, k = 32, 3
    cents = _sphere(rng, k, d)
    base = []
    cid = []
    for c in range(k):  # 20 distinct points per cluster, spread around its centroid
        base.append(_unit(cents[c] + 0.6 * rng.normal(size=(20, d))))
        cid += [c] * 20
    emb = np.concatenate(base)
    cid = np.array(cid)
    groups = []
    for src in (3, 25, 47, 50):  # plant 2-3 near-copies of four rows
        copies = _unit(emb[src] + 1e-3 * rng.normal(size=(2 + src % 2, d)))
        start = emb.shape[0]
        emb = np.concatenate([emb, copies])
        cid = np.concatenate([cid, np.full(copies.shape[0], cid[src])])
        groups.append([src, *range(start, emb.shape[0])])
    keep = semdedup_keep(emb, cid, cents, eps=0.01)
    planted = {i for g in groups for i in g}
    assert keep[[i for i in range(emb.shape[0]) if i not in planted]].all()  # nothing else removed
    for g in groups:  # exactly one of each group kept: the one with the lowest similarity to its centroid
        sims = [float(_unit(emb[[i]])[0] @ _unit(cents[[cid[i]]])[0]) for i in g]
        assert keep[g].sum() == 1
        assert g[int(np.argmin(sims))] == g[int(np.flatnonzero(keep[g])[0])]


def test_semdedup_compares_across_blocks():
    from datacomp.filters.methods import semdedup as sd

    rng = np.random.default_rng(1)
    e = _sphere(rng, 50, 16)
    e[40] = e[2]  # duplicate far apart in the order, forced into another block
    sim = np.linspace(0, 1, 50)
    old, sd.BLOCK = sd.BLOCK, 7
    try:
        keep = duplicates_keep(e, sim, 0.01)
    finally:
        sd.BLOCK = old
    assert keep.sum() == 49 and not keep[40]


# -- negclip -------------------------------------------------------------------------------------------

def test_negclip_demotes_a_generic_caption_below_a_specific_one_of_equal_clip_score():
    rng = np.random.default_rng(0)
    d, n = 64, 200
    img = _sphere(rng, n, d)
    txt = _unit(img + 0.8 * rng.normal(size=(n, d)) / np.sqrt(d))
    generic = _unit(img.mean(0, keepdims=True))[0]  # close to every image
    # sample 0: specific caption, sample 1: generic caption, both at raw similarity 0.3 to their own image
    for i, direction in ((0, None), (1, generic)):
        other = direction if direction is not None else _unit(rng.normal(size=(1, d)))[0]
        other = _unit((other - (other @ img[i]) * img[i])[None])[0]
        txt[i] = 0.3 * img[i] + np.sqrt(1 - 0.09) * other
    raw = np.einsum("ij,ij->i", img, txt)
    assert raw[0] == pytest.approx(raw[1], abs=1e-6)
    s = negclip_scores(img, txt, batch=64, repeats=4, tau=0.05, rng=np.random.default_rng(3))
    assert s[1] < s[0] - 0.01
    # deterministic given the generator; the batch term is what changes the order
    assert np.array_equal(s, negclip_scores(img, txt, 64, 4, 0.05, np.random.default_rng(3)))


# -- normsim -------------------------------------------------------------------------------------------

def test_normsim_ranks_samples_near_the_target_set_first():
    rng = np.random.default_rng(0)
    d = 32
    targets = _sphere(rng, 10, d)
    near = _unit(targets[:5] + 0.1 * rng.normal(size=(5, d)))
    far = _sphere(rng, 20, d)
    n2, ninf = normsim(np.concatenate([far[:10], near, far[10:]]), targets)
    for col in (n2, ninf):
        assert set(np.argsort(-col)[:5]) == set(range(10, 15))
    assert ninf[10] == pytest.approx(float(near[0] @ targets[0]), abs=1e-5)  # p=inf is the nearest target
    assert n2[10] == pytest.approx(np.sqrt(np.mean((targets @ near[0]) ** 2)), abs=1e-5)  # p=2: RMS


# -- density -------------------------------------------------------------------------------------------

def test_density_keeps_a_larger_share_of_a_sparse_cluster_than_of_a_dense_one():
    rng = np.random.default_rng(0)
    d = 16
    cents = _sphere(rng, 4, d)
    spread = (0.05, 0.05, 0.8, 0.8)  # two dense clusters, two sparse ones, 100 rows each
    emb = np.concatenate([_unit(c + s * rng.normal(size=(100, d)) / np.sqrt(d) * 4) for c, s in zip(cents, spread)])
    cid = np.repeat(np.arange(4), 100)
    keep = density_keep(emb, cid, cents, fraction=0.3, tau=0.1)
    assert keep.sum() == 120
    share = [keep[cid == j].mean() for j in range(4)]
    assert min(share[2], share[3]) > max(share[0], share[1])
    # within a cluster the kept rows are the farthest from the centroid
    j = next(j for j in range(4) if 0 < share[j] < 1)
    sim = emb[cid == j] @ _unit(cents[[j]])[0]
    assert sim[keep[cid == j]].max() <= sim[~keep[cid == j]].min()


def test_density_quotas_are_capped_and_sum_to_the_target():
    cents = np.eye(3, 4)
    q = quotas(np.array([5, 100, 100]), np.array([10.0, 0.01, 0.01]), cents, 60, tau=0.1)
    assert q.tolist()[0] == 5 and q.sum() == 60 and q[1] + q[2] == 55


# -- the methods on the embedded pool, through the CLI ---------------------------------------------------

def _truth(world):
    import pandas as pd
    import pyarrow.parquet as pq

    from datacomp.uids import hex_to_uids

    t = pd.concat([pq.read_table(f).to_pandas() for f in sorted(world.truth.glob("*.parquet"))])
    u = hex_to_uids(__import__("pyarrow").array(t["uid"].astype(str)))
    return {(int(a), int(b)): k for a, b, k in zip(u["f0"], u["f1"], t["kind"])}


def _kept_kinds(world, subset):
    truth = _truth(world)
    s = read_subset(subset)
    kinds = [truth[(int(a), int(b))] for a, b in zip(s["f0"], s["f1"])]
    return {k: kinds.count(k) / list(truth.values()).count(k) for k in set(truth.values())}


def _filter(*args):
    from datacomp.cli import main

    assert main(["filter", *[str(a) for a in args]]) == 0


def _summary(out):
    from datacomp.artifacts import summary_path

    return json.loads(Path(summary_path(out)).read_text())


def test_negclip_and_normsim_on_the_world_cli(world, tmp_path):
    sig = tmp_path / "signals"
    _filter("--name", "negclip", "--fraction", "0.3", "--metadata-dir", world.metadata, "--output",
            tmp_path / "n.npy", "--signals-dir", sig)
    _filter("--name", "normsim", "--fraction", "0.3", "--metadata-dir", world.metadata, "--output",
            tmp_path / "s.npy", "--signals-dir", sig)
    n = read_subset(tmp_path / "n.npy")
    assert n.size == 1200  # the exact global cut: round(0.3 * 4000)
    kinds = _kept_kinds(world, tmp_path / "n.npy")
    # random: 0.3 each (the text cards, which the scorer reads, take a fifth of the cut)
    assert kinds["clean"] > 0.6 and kinds["misaligned"] < 0.1 and kinds["junk"] < 0.1
    kinds = _kept_kinds(world, tmp_path / "s.npy")
    assert read_subset(tmp_path / "s.npy").size == 1200
    assert kinds["off_distribution"] < 0.1  # far from the ImageNet stand-in targets
    # the same cut through --where on the cached column (the rank cut is >= the summary's threshold)
    thr = _summary(tmp_path / "s.npy")["threshold"]
    _filter("--where", f"normsim_inf_l14 >= {thr!r}", "--metadata-dir", world.metadata, "--output",
            tmp_path / "w.npy", "--signals-dir", sig)
    assert np.array_equal(read_subset(tmp_path / "w.npy"), read_subset(tmp_path / "s.npy"))


def test_semdedup_and_density_on_the_world_cli(world, tmp_path):
    from datacomp.filters import metadata as md
    from datacomp.filters.clusters import assign

    sig = tmp_path / "signals"
    common = ("--metadata-dir", world.metadata, "--signals-dir", sig, "--num-clusters", "16", "--seed", "3")
    _filter("--name", "semdedup", "--param", "semdedup.eps=0.005", "--output", tmp_path / "d.npy", *common)
    # the global pass equals the in-memory rule over the whole pool with the pass's centroids
    cdir = next(sig.glob("semdedup-*"))
    cents = np.load(cdir / "centroids.npy")
    files = md.list_parquets(world.metadata)
    emb = np.concatenate([md.read_embeddings(f, "l14_img") for f in files])
    keep = semdedup_keep(emb, assign(emb, cents, "l2"), cents, 0.005)
    uids = np.concatenate([md.read_columns(f, ["uid"]).column("uid").to_numpy(zero_copy_only=False) for f in files])
    from datacomp.uids import hex_to_uids, sort_uids

    want = sort_uids(hex_to_uids(__import__("pyarrow").array(uids[keep])))
    got = read_subset(tmp_path / "d.npy")
    assert 3700 < got.size < 4000 and np.array_equal(got, want)
    # density keeps exactly the fraction, and the same subset again from a fresh cache (deterministic)
    _filter("--name", "density", "--fraction", "0.3", "--output", tmp_path / "p.npy", *common)
    assert read_subset(tmp_path / "p.npy").size == 1200
    common2 = ("--metadata-dir", world.metadata, "--signals-dir", tmp_path / "s2", "--num-clusters", "16",
               "--seed", "3")
    _filter("--name", "density", "--fraction", "0.3", "--output", tmp_path / "p2.npy", *common2)
    assert np.array_equal(read_subset(tmp_path / "p.npy"), read_subset(tmp_path / "p2.npy"))
    # CLIP score intersected with semdedup: both rules, from the cached signal
    _filter("--name", "semdedup", "--param", "semdedup.eps=0.005", "--arch", "l14", "--fraction", "0.3",
            "--output", tmp_path / "c.npy", *common)
    s = _summary(tmp_path / "c.npy")
    assert set(s["removed"]) == {"semdedup", "top clip_l14_similarity_score"}
    assert s["kept"] < 1200 and s["kept"] == np.intersect1d(got, read_subset(tmp_path / "c.npy")).size


def _mini_pool(world, tmp_path, rows=8):
    """The first rows of one world metadata file (parquet + npz), its images still in the world's shards."""
    import pyarrow.parquet as pq

    f = sorted(world.metadata.glob("*.parquet"))[0]
    d = tmp_path / "mini"
    d.mkdir()
    pq.write_table(pq.read_table(f).slice(0, rows), d / f.name)
    with np.load(f.with_suffix(".npz")) as z:
        np.savez(d / f.with_suffix(".npz").name, **{k: z[k][:rows] for k in z.files})
    return d


def test_dfn_equals_a_direct_open_clip_computation(world, tmp_path):
    import open_clip
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from datacomp.filters import metadata as md
    from datacomp.filters.pixels import shard_images
    from datacomp.models import REFERENCE_WEIGHTS_DIR, register_model_configs
    from datacomp.uids import hex_to_uids

    mini = _mini_pool(world, tmp_path)
    score = {}
    for spec in ("", "datacomp-ref-l14"):  # the default filtering network, then the pool's own scorer
        _filter("--name", "dfn", "--fraction", "0.5", "--metadata-dir", mini, "--shards-dir", world.shards,
                "--output", tmp_path / f"f{spec}.npy", "--signals-dir", tmp_path / f"sig{spec}",
                *(["--param", f"dfn.model={spec}"] if spec else []))
        got = next((tmp_path / f"sig{spec}").glob("dfn-*/*.parquet"))
        score[spec] = pq.read_table(got).column("dfn_score").to_numpy()
    f = next(mini.glob("*.parquet"))
    # direct: open_clip's own factory with the shipped filtering network, images straight from the shards
    register_model_configs()
    model, _, pre = open_clip.create_model_and_transforms(
        "datacomp-ref-dfn", pretrained=str(REFERENCE_WEIGHTS_DIR / "dfn.safetensors"))
    model.eval()
    tok = open_clip.get_tokenizer("datacomp-ref-dfn")
    meta = md.read_columns(f, ["uid", "text", "clip_l14_similarity_score"])
    imgs = shard_images(world.shards).image_bytes(hex_to_uids(meta.column("uid").combine_chunks()))
    import io

    with torch.no_grad():
        x = torch.stack([pre(Image.open(io.BytesIO(b)).convert("RGB")) for b in imgs])
        fi = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)
        ft = torch.nn.functional.normalize(model.encode_text(tok(meta.column("text").to_pylist())).float(), dim=-1)
    want = (fi * ft).sum(-1).numpy()
    np.testing.assert_allclose(score[""], want, atol=2e-3)
    # the pool's scorer as the network gives back the pool's own l14 score; the filtering network differs
    pool_score = meta.column("clip_l14_similarity_score").to_numpy()
    np.testing.assert_allclose(score["datacomp-ref-l14"], pool_score, atol=5e-3)
    assert np.abs(score[""] - pool_score).max() > 0.05
    assert read_subset(tmp_path / "f.npy").size == 4


@pytest.mark.slow
@pytest.mark.ray
def test_semdedup_ray_equals_local(ray_cluster, world, tmp_path):
    got = {}
    for ex in ("local", "ray"):
        extra = ["--executor", "ray", "--ray-address", ray_cluster, "-j", "2"] if ex == "ray" else \
            ["--executor", "local", "-j", "2"]
        _filter("--name", "semdedup", "--param", "semdedup.eps=0.005", "--num-clusters", "16",
                "--metadata-dir", world.metadata, "--output", tmp_path / f"{ex}.npy",
                "--signals-dir", tmp_path / f"sig-{ex}", *extra)
        got[ex] = read_subset(tmp_path / f"{ex}.npy")
    assert got["ray"].size < 4000 and np.array_equal(got["ray"], got["local"])


def test_bad_method_params_are_one_line_errors(world, tmp_path, capsys):
    from datacomp.cli import main

    base = ["filter", "--metadata-dir", str(world.metadata), "--output", str(tmp_path / "x.npy")]
    cases = [(["--name", "semdedup", "--param", "semdedup.esp=0.1"], "semdedup has no parameter 'esp'"),
             (["--name", "semdedup", "--param", "semdedup.eps=abc"], "semdedup.eps=abc: expected a float"),
             (["--name", "negclip"], "give --fraction"),
             (["--name", "density"], "give --fraction"),
             (["--name", "normsim", "--fraction", "0.3", "--param", "normsim.p=3"], "choose 2 or inf"),
             (["--name", "density", "--threshold", "0.3"], "not --threshold"),
             (["--name", "text_in_image", "--fraction", "0.3", "--param", "text_in_image.detector=ocr"],
              "no such text detector"),
             (["--name", "text_in_image", "--fraction", "0.3", "--param", "text_in_image.modle=x"],
              "text_in_image has no parameter 'modle'")]
    for args, msg in cases:
        capsys.readouterr()
        assert main(base + args) != 0
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.ray
def test_every_method_on_ray_equals_local(ray_cluster, world, tmp_path):
    """Each method's subset through a real local Ray cluster is the local one, bit for bit."""
    runs = {"negclip": ["--fraction", "0.3"], "normsim": ["--fraction", "0.3"],
            "density": ["--fraction", "0.3", "--num-clusters", "16"], "dfn": ["--fraction", "0.3"],
            "text_in_image": ["--fraction", "0.3"]}
    for name, args in runs.items():
        got = {}
        for ex in ("local", "ray"):
            extra = ["--executor", "ray", "--ray-address", ray_cluster, "-j", "2"] if ex == "ray" else \
                ["--executor", "local", "-j", "2"]
            _filter("--name", name, *args, "--metadata-dir", world.metadata, "--shards-dir", world.shards,
                    "--output", tmp_path / f"{name}-{ex}.npy", "--signals-dir", tmp_path / f"sig-{ex}", *extra)
            got[ex] = read_subset(tmp_path / f"{name}-{ex}.npy")
        assert got["ray"].size == 1200 and np.array_equal(got["ray"], got["local"]), name


# -- text_in_image (T-MARS) ------------------------------------------------------------------------------

def _card(lines, scale=1, x0=2, y0=3, paper=225.0, ink=30.0):
    from datacomp.filters.methods.textspot import draw_text

    img = np.full((32, 32, 3), paper, np.float32)
    draw_text(img, lines, x0, y0, scale, np.full(3, ink, np.float32))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def test_world_font_detector_boxes_words_and_nothing_else():
    from datacomp.filters.methods.textspot import detect_world_font, text_size
    from datacomp.synth.noise import NoiseMix, plan_samples
    from datacomp.synth.pool import render_planned
    from datacomp.synth.render import decode, encode_jpeg

    # two words at scale 1: the mask is exactly their letter boxes grown by one pixel
    card = _card(["RED", "STAR"], x0=2, y0=3)
    m = detect_world_font(card[None])[0]
    want = np.zeros((32, 32), bool)
    want[2:9, 1:14] = True  # RED: rows 3-7, columns 2-12, grown by one
    want[9:16, 1:18] = True  # STAR: rows 10-14, columns 2-16
    assert np.array_equal(m, want)
    # scale 2 and a JPEG round trip are still read; a two-letter word is not a word; a blank card is blank
    assert detect_world_font(decode(encode_jpeg(_card(["RING"], scale=2, x0=1, y0=9)))[None])[0][9:19].mean() > 0.8
    assert not detect_world_font(_card(["OK"])[None]).any()
    assert not detect_world_font(_card([])[None]).any()
    # low contrast (ink nearly the paper's tone) is not read; light ink on a dark card is
    assert not detect_world_font(_card(["STAR"], ink=200.0)[None]).any()
    assert np.array_equal(detect_world_font(_card(["RED", "STAR"], paper=40.0, ink=220.0)[None])[0], want)
    # the world's pictures hold no text: no detection on 600 planned samples that are not text images
    plan = plan_samples(5, 1, 0, 600, NoiseMix(text_in_image=0.0))
    imgs = np.stack([decode(b) for b in render_planned(plan)[0]])
    assert not detect_world_font(imgs).any()
    assert text_size(["RED", "STAR"], 1) == (15, 12)


def test_tmars_masks_the_text_and_keeps_the_picture():
    from datacomp.filters.methods.text_in_image import mask_text, tmars
    from datacomp.synth.render import Scenes, render

    card = _card(["RED", "STAR"], x0=8, y0=9)
    s = Scenes(*(np.array([v]) for v in (3, 0, 1, 1, 4, 0, 0)), jitter=np.full((1, 32), 0.5))  # a large red star
    star = render(s)[0]
    caption = "a photo of a red star"
    r = tmars([card, star, None], [caption, caption, caption])
    area, masked, drop = r["text_area"], r["text_masked_score"], r["text_score_drop"]
    assert area[0] > 0.1 and area[1] == 0 and np.isnan(area[2])
    # the card matched its caption by its letters: masked, it is a blank card and the match is gone
    assert drop[0] > 0.3 and masked[0] < masked[1] - 0.3
    # the picture has no text: its masked score is its score
    assert drop[1] == 0 and np.isnan(masked[2])
    blank = mask_text(card, np.asarray(card.mean(-1) < 128))
    assert np.ptp(blank.reshape(-1, 3), axis=0).max() < 12  # text filled with the paper's own colour


def test_text_in_image_on_the_world_cli(world, tmp_path):
    sig = tmp_path / "signals"
    common = ("--metadata-dir", world.metadata, "--shards-dir", world.shards, "--signals-dir", sig)
    _filter("--name", "text_in_image", "--fraction", "0.3", "--output", tmp_path / "t.npy", *common)
    _filter("--name", "clip_score", "--arch", "l14", "--fraction", "0.3", "--output", tmp_path / "c.npy",
            "--metadata-dir", world.metadata)
    assert read_subset(tmp_path / "t.npy").size == 1200
    tmars_kinds, clip_kinds = _kept_kinds(world, tmp_path / "t.npy"), _kept_kinds(world, tmp_path / "c.npy")
    # the reading scorer keeps most text cards in its top 30%; T-MARS keeps almost none and more clean pictures
    assert clip_kinds["text_in_image"] > 0.5 and tmars_kinds["text_in_image"] < 0.02
    assert tmars_kinds["clean"] > clip_kinds["clean"]
    # the detector's column finds the text cards and nothing else
    _filter("--where", "text_area > 0", "--metadata-dir", world.metadata, "--shards-dir", world.shards,
            "--signals-dir", sig, "--output", tmp_path / "w.npy")
    found = _kept_kinds(world, tmp_path / "w.npy")
    assert found["text_in_image"] > 0.97 and max(v for k, v in found.items() if k != "text_in_image") == 0


def test_a_text_detector_plugs_in_from_a_plugin_file(world, tmp_path):
    import pyarrow.parquet as pq

    mini = _mini_pool(world, tmp_path)
    plugin = Path(__file__).parent / "plugins" / "everything_is_text.py"
    _filter("--plugin", plugin, "--name", "text_in_image", "--param", "text_in_image.detector=everything",
            "--fraction", "0.5", "--metadata-dir", mini, "--shards-dir", world.shards, "-j", "2",
            "--output", tmp_path / "e.npy", "--signals-dir", tmp_path / "sig")
    t = pq.read_table(next((tmp_path / "sig").glob("text_in_image-*/*.parquet")))
    assert t.column("text_area").to_numpy().tolist() == [1.0] * 8  # the plug-in's masks were used
    # every image became one flat colour, so the drop is the whole score the picture had
    masked = t.column("text_masked_score").to_numpy()
    drop = t.column("text_score_drop").to_numpy()
    score = pq.read_table(next(mini.glob("*.parquet"))).column("clip_l14_similarity_score").to_numpy()
    np.testing.assert_allclose(masked + drop, score, atol=5e-3)
    assert read_subset(tmp_path / "e.npy").size == 4
