"""The signals cache is lazy per group and per file: a run computes only the groups its rule needs,
a later rule computes only the groups still missing, and the result equals a from-scratch run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp.filters import run_filter
from datacomp.filters import text as tx
from datacomp.filters.signals import GROUP_COLUMNS, SignalConfig, ensure_signals, groups_for, missing_groups
from datacomp.uids import read_subset
from test_filter_world import make_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return make_pool(tmp_path_factory.mktemp("lazy"), files=3, rows=400)


def _run(name: str, pool: Path, out: Path, sig: Path, **kw) -> tuple[np.ndarray, dict]:
    kw.setdefault("workers", 1)
    s = run_filter(name, pool, out, signals_dir=sig, progress=False, **kw)
    return read_subset(out), s


def _groups(sig: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in sig.iterdir() if p.is_dir())


def _mtimes(sig: Path) -> dict[str, int]:
    return {str(p.relative_to(sig)): p.stat().st_mtime_ns for p in sig.rglob("*.parquet")}


def test_groups_for_the_baselines():
    assert groups_for(["lang", "text_words", "text_chars", "min_side", "aspect"]) == ["lang", "caption"]
    assert groups_for(["clip_b32_similarity_score", "cld3_lang"]) == ["cld3"]
    assert groups_for(["lang", "in21k"]) == ["lang", "concepts"]
    assert groups_for(["lang", "in21k_compat"]) == ["lang", "concepts_compat"]
    assert groups_for(["lang", "ft_tokens", "text_chars", "cluster_l2"]) == ["lang", "ft_tokens", "caption", "clusters"]


def test_cold_basic_filter_computes_only_its_groups(pool, tmp_path):
    sig = tmp_path / "sig"
    _, s = _run("basic_filter", pool, tmp_path / "basic.npy", sig)
    # fastText language + caption counts; no CLD3, no WordNet, no fastText token counts.
    assert _groups(sig) == ["caption", "lang"]
    for g in ("lang", "caption"):
        files = sorted(p.name for p in (sig / g).glob("*.parquet"))
        assert files == sorted(p.name for p in pool.glob("*.parquet"))
        t = pq.read_table(sig / g / files[0])
        assert tuple(t.column_names) == GROUP_COLUMNS[g]
    assert s["kept"] > 0


def _lang_rows(sig: Path, stem: str) -> np.ndarray:
    """Rows of one file whose language is cached (row-lazy group: null = not computed yet)."""
    return pq.read_table(sig / "lang" / f"{stem}.parquet").column("lang").is_valid().to_numpy(zero_copy_only=False)


def _basic_cheap_rules(f: Path) -> np.ndarray:
    t = pq.read_table(f).to_pylist()
    return np.array([len((r["text"] or "").split()) > 2 and len(r["text"] or "") > 5
                     and min(r["original_width"], r["original_height"]) >= 200
                     and max(r["original_width"], r["original_height"])
                     / min(r["original_width"], r["original_height"]) <= 3 for r in t])


def test_later_rules_compute_only_missing_groups_and_match_from_scratch(pool, tmp_path):
    sig = tmp_path / "sig"
    files = sorted(pool.glob("*.parquet"))
    _, s_basic = _run("basic_filter", pool, tmp_path / "basic.npy", sig)
    # Language ID ran only on the rows the size/caption rules keep.
    for f in files:
        cheap = _basic_cheap_rules(f)
        assert 0 < cheap.sum() < cheap.size and np.array_equal(_lang_rows(sig, f.stem), cheap)
    assert list(s_basic["removed"])[-1] == "english"
    assert s_basic["failing"]["english"] == s_basic["removed"]["english"]  # counted among the rows reached
    before = _mtimes(sig)
    lang_before = {f.stem: pq.read_table(sig / "lang" / f"{f.stem}.parquet") for f in files}

    laion, s_laion = _run("laion2b", pool, tmp_path / "laion.npy", sig)
    assert _groups(sig) == ["caption", "cld3", "lang"]
    after = _mtimes(sig)
    assert {k: after[k] for k in before} == before  # lang and caption reused, not rewritten
    assert sorted(k.split("/")[0] for k in set(after) - set(before)) == ["cld3"] * 3

    text, s_text = _run("text_based", pool, tmp_path / "text.npy", sig)
    assert _groups(sig) == ["caption", "cld3", "concepts", "lang"]  # not concepts_compat
    now = _mtimes(sig)
    assert {k: now[k] for k in after if not k.startswith("lang/")} == {k: v for k, v in after.items()
                                                                      if not k.startswith("lang/")}
    for f in files:  # language added for the rows with an ImageNet word; the others kept as they were
        in21k = pq.read_table(next((sig).glob("concepts-*")) / f"{f.stem}.parquet").column("in21k").to_numpy()
        rows = _lang_rows(sig, f.stem)
        assert np.array_equal(rows, _basic_cheap_rules(f) | in21k)
        old = lang_before[f.stem].column("lang").to_pylist()
        new = pq.read_table(sig / "lang" / f"{f.stem}.parquet").column("lang").to_pylist()
        assert [b for a, b in zip(old, new) if a is not None] == [a for a in old if a is not None]

    # The same selections and summaries from empty caches.
    for name, got, s in (("laion2b", laion, s_laion), ("text_based", text, s_text)):
        fresh = tmp_path / f"fresh-{name}"
        want, s_want = _run(name, pool, tmp_path / f"{name}-fresh.npy", fresh)
        assert np.array_equal(got, want)
        assert s["removed"] == s_want["removed"] and s["failing"] == s_want["failing"]
        assert _groups(fresh) == (["cld3"] if name == "laion2b" else ["concepts", "lang"])

    # A rule over every row's language completes the partial files; values equal a full computation.
    everything, _ = _run(None, pool, tmp_path / "en.npy", sig, where="lang = 'en'")
    full = tmp_path / "full"
    want, _ = _run(None, pool, tmp_path / "en-fresh.npy", full, where="lang = 'en'")
    assert np.array_equal(everything, want) and len(want) > 0
    for f in files:
        a = pq.read_table(sig / "lang" / f"{f.stem}.parquet")
        b = pq.read_table(full / "lang" / f"{f.stem}.parquet")
        assert a.column("lang").to_pylist() == b.column("lang").to_pylist()
        assert a.column("lang_score").to_pylist() == b.column("lang_score").to_pylist()
        assert a.column("lang").null_count == 0
    basic_again, s_again = _run("basic_filter", pool, tmp_path / "basic2.npy", sig)
    assert np.array_equal(basic_again, read_subset(tmp_path / "basic.npy")) and s_again["removed"] == s_basic["removed"]


def test_compat_text_based_adds_only_the_compat_group(pool, tmp_path):
    sig = tmp_path / "sig"
    _run("text_based", pool, tmp_path / "t.npy", sig)
    before = {k: v for k, v in _mtimes(sig).items() if k.startswith("concepts")}
    got, _ = _run("text_based", pool, tmp_path / "tc.npy", sig, compat=True)
    assert _groups(sig) == ["concepts", "concepts_compat", "lang"]
    assert {k: v for k, v in _mtimes(sig).items() if k in before} == before
    want, _ = _run("text_based", pool, tmp_path / "tc-fresh.npy", tmp_path / "fresh", compat=True)
    assert np.array_equal(got, want)


def test_ensure_signals_reports_only_what_it_computed(pool, tmp_path):
    cfg = SignalConfig(str(tmp_path / "sig"))
    f = sorted(pool.glob("*.parquet"))[0]
    n = pq.ParquetFile(f).metadata.num_rows
    some = np.arange(n) % 3 == 0
    assert ensure_signals(f, ["lang"], cfg, rows=some) == {"lang": int(some.sum())}
    assert missing_groups(f, ["lang"], cfg) == ["lang"]  # partial: not there for every row
    assert ensure_signals(f, ["lang"], cfg, rows=some) == {}
    assert ensure_signals(f, ["lang", "caption"], cfg) == {"lang": n - int(some.sum()), "caption": n}
    assert missing_groups(f, ["lang", "caption", "cld3"], cfg) == ["cld3"]
    assert ensure_signals(f, ["lang", "caption", "cld3"], cfg) == {"cld3": n}
    assert ensure_signals(f, ["lang", "caption", "cld3"], cfg) == {}
    # A killed run leaves no partial file; a removed one is recomputed alone.
    (tmp_path / "sig" / "lang" / f"{f.stem}.parquet").unlink()
    assert ensure_signals(f, ["lang", "caption", "cld3"], cfg) == {"lang": n}
    # A file of an older cache layout (other columns) is recomputed, not misread.
    old = tmp_path / "sig" / "caption" / f"{f.stem}.parquet"
    meta = pq.read_schema(old).metadata
    pq.write_table(pa.table({"lang": pa.array(["en"] * n)}).replace_schema_metadata(meta), old)
    assert missing_groups(f, ["caption"], cfg) == ["caption"]
    assert ensure_signals(f, ["caption"], cfg) == {"caption": n}
    text = pq.read_table(f, columns=["text"]).column("text").to_pylist()
    t = pq.read_table(old)
    assert t.column("text_words").to_pylist() == [len((x or "").split()) for x in text]
    assert t.column("text_chars").to_pylist() == [len(x or "") for x in text]


def test_lang_group_uses_one_batched_predict_per_batch(monkeypatch):
    """fastText is called once per batch of distinct captions, never once per row."""
    calls: list[int] = []
    model = tx._fasttext_model()
    real = model.f.multilinePredict

    class Spy:
        def multilinePredict(self, lines, *a):  # noqa: N802 - fastText's name
            calls.append(len(lines))
            return real(lines, *a)

    monkeypatch.setattr(model, "f", Spy())
    text = pa.array(["a red dog on the beach", "ein roter Hund", "a red dog on the beach", None, "x\ny"] * 50)
    lang, score = tx.fasttext_language(text, batch=3)
    assert calls == [3, 1]  # 4 distinct captions (null = ""), in batches of 3
    got = lang.to_pylist()
    assert got[0] == got[2] == "en" and got[1] == "de" and len(got) == 250
    assert score.dtype == np.float32 and 0 < score[0] <= 1.0


def test_word_and_token_counts_match_python_on_all_unicode():
    import fasttext

    rng = np.random.default_rng(0)
    chars = [chr(c) for c in range(0x3100) if not 0xD800 <= c <= 0xDFFF]
    chars += ["\u3000", "\u2028", "\u205f", "\x85", "\xa0", " ", "\x00", "\n"] * 200
    texts = ["".join(rng.choice(chars, rng.integers(0, 12))) for _ in range(5000)] + ["", None, " \xa0 a"]
    arr = pa.array(texts)
    assert tx.word_count(arr).tolist() == [len((x or "").split()) for x in texts]
    assert tx.fasttext_token_count(arr).tolist() == [len(fasttext.tokenize(x or "")) for x in texts]
    assert tx.word_count(arr.slice(7, 100)).tolist() == [len((x or "").split()) for x in texts[7:107]]


def test_entity_match_tokens_follow_str_split(tmp_path):
    """Tokens are ``str.split()`` pieces (any Unicode space), normalised per distinct token."""
    import re

    ents = tmp_path / "ents.txt"
    ents.write_text("dog\ncat\nhouse\n")
    m = tx.entity_matcher(str(ents))
    texts = ["a dog", "a\u3000dog", "a\x1cdog", "a\x85dog!", "dogs,", "Dogs!", "(Cat)", "catalogue", "", None,
             "hot\u2028house", "no match here", "a  \t dog\n", "DOG", "«house»"]
    arr = pa.array(texts)
    punct = re.compile(r"^[^\w\s]+|[^\w\s]+$")

    def hit(tok: str, compat: bool) -> bool:
        if not compat:
            tok = punct.sub("", tok).lower()
        if not tok:
            return False
        first = m.wn.first_synset(tok) if compat else m.wn.first_synset(tok, ("n",))
        return first is not None and first[1] in (m.offsets if compat else m.noun_offsets)

    for compat in (False, True):
        want = [any(hit(t, compat) for t in (x or "").split()) for x in texts]
        assert m.match(arr, compat=compat).tolist() == want
    assert m.match(arr, compat=False).tolist()[:7] == [True] * 7
    assert m.match(arr, compat=True).tolist()[4:7] == [False, False, False]  # punctuation kept


def test_cold_run_in_parent_and_worker_process_matches_serial(pool, tmp_path):
    """workers=2 cold: the parent and one spawned process share the files; same result as serial."""
    one, s1 = _run("basic_filter", pool, tmp_path / "one.npy", tmp_path / "sig1", workers=1)
    two, s2 = _run("basic_filter", pool, tmp_path / "two.npy", tmp_path / "sig2", workers=2)
    assert np.array_equal(one, two) and s1["removed"] == s2["removed"] and s1["failing"] == s2["failing"]
    for g in ("lang", "caption"):
        for f in sorted(pool.glob("*.parquet")):
            a = pq.read_table(tmp_path / "sig1" / g / f"{f.stem}.parquet")
            b = pq.read_table(tmp_path / "sig2" / g / f"{f.stem}.parquet")
            assert a.equals(b)


def test_cold_run_error_in_a_worker_is_raised(pool, tmp_path):
    """A task failing in the spawned process stops the run with the task's own error."""
    from datacomp.errors import DataCompError

    bad = tmp_path / "meta"
    bad.mkdir()
    for f in sorted(pool.glob("*.parquet")):
        (bad / f.name).write_bytes(f.read_bytes())
    t = pq.read_table(bad / "00000001.parquet").drop_columns(["text"])
    pq.write_table(t, bad / "00000001.parquet")
    with pytest.raises(DataCompError, match="missing column 'text'"):
        _run("basic_filter", bad, tmp_path / "x.npy", tmp_path / "sig", workers=2)
