"""Caption signals over whole Arrow arrays: lengths, token counts, language ID, ImageNet-21k words.

Everything here works on a pyarrow string array at once (pyarrow compute kernels and numpy); the
only Python loops run over *distinct* captions (language ID, batched) or distinct tokens (WordNet,
memoised per process), never over rows.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datacomp.errors import DataCompError, MissingDependencyError

log = logging.getLogger(__name__)

PUNCT_EDGES = r"^[\p{P}\p{S}]+|[\p{P}\p{S}]+$"


def as_text(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Captions as one string array, nulls as empty strings (the original crashes on nulls)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return pc.fill_null(arr, "")


def char_count(text: pa.Array) -> np.ndarray:
    """``len(text)`` in code points."""
    return pc.utf8_length(as_text(text)).to_numpy(zero_copy_only=False).astype(np.int32)


# Python's str.isspace() bytes below 0x80, and fastText's token separators (Dictionary::readWord).
_PY_SPACE = np.zeros(256, bool)
_PY_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_FT_SPACE = np.zeros(256, bool)
_FT_SPACE[[0, 9, 10, 11, 12, 13, 32]] = True
# Lead bytes of the multi-byte code points Python counts as whitespace (U+0085, U+00A0, U+1680,
# U+2000..U+205F, U+3000): rows holding one take Arrow's exact Unicode split instead.
_MULTIBYTE_SPACE_LEAD = np.zeros(256, bool)
_MULTIBYTE_SPACE_LEAD[[0xC2, 0xE1, 0xE2, 0xE3]] = True


def _byte_runs(text: pa.Array, sep: np.ndarray, flag: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the runs of bytes not in ``sep`` (tokens), and whether the row holds a byte in ``flag``.

    One pass of numpy over the string data buffer, instead of splitting into Python or Arrow lists.
    """
    text = as_text(text)
    n = len(text)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    off = np.frombuffer(text.buffers()[1], np.int32, n + 1, text.offset * 4).astype(np.int64)
    data = np.frombuffer(text.buffers()[2], np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    b = data[off[0] : off[-1]]
    rel = off - off[0]
    is_sep = sep[b]
    start = ~is_sep
    start[1:] &= is_sep[:-1]
    first = rel[:-1][rel[:-1] < rel[1:]]  # the first byte of each non-empty row starts a token if not a separator
    start[first] = ~is_sep[first]
    cs = np.concatenate([[0], np.cumsum(start)])
    runs = cs[rel[1:]] - cs[rel[:-1]]
    flagged = np.zeros(n, bool)
    if flag is not None:
        pos = np.flatnonzero(flag[b])  # usually few: map each flagged byte to its row
        flagged[np.searchsorted(rel[1:], pos, side="right")] = True
    return runs, flagged


def word_count(text: pa.Array) -> np.ndarray:
    """``len(text.split())``.

    Counted over the bytes with Python's ASCII whitespace; rows that may hold a multi-byte Unicode
    space are split by Arrow's ``utf8_split_whitespace`` (which splits at exactly ``str.isspace``
    code points; tests check every code point). About 10x faster than a regex count.
    """
    text = as_text(text)
    runs, odd = _byte_runs(text, _PY_SPACE, _MULTIBYTE_SPACE_LEAD)
    if odd.any():
        idx = np.flatnonzero(odd)
        lists = pc.utf8_split_whitespace(text.take(pa.array(idx, pa.int64())))
        total = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        empty = pc.equal(pc.binary_length(pc.list_flatten(lists)), 0).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        runs[idx] = total - np.bincount(parents[empty], minlength=len(idx))[: len(idx)]
    return runs.astype(np.int32)


def fasttext_token_count(text: pa.Array) -> np.ndarray:
    """``len(fasttext.tokenize(text))``: runs of non-separator bytes plus one EOS per newline."""
    text = as_text(text)
    runs, _ = _byte_runs(text, _FT_SPACE)
    eos = pc.count_substring(text, "\n").to_numpy(zero_copy_only=False)
    return (runs + eos).astype(np.int32)


# --- language identification -------------------------------------------------------------------


LID_MODEL_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"


def lid_model_path() -> str:
    """fastText's quantised 176-language model ``lid.176.ftz``, shipped in the package (CC BY-SA 3.0,
    see ``filters/data/NOTICE.txt``): no download, and no second fastText package to provide it."""
    p = Path(__file__).with_name("data") / "lid.176.ftz"
    if not p.is_file():
        raise DataCompError(f"{p}: lid.176.ftz is missing from the installed package; reinstall datacomp")
    return str(p)


@functools.lru_cache(maxsize=1)
def _fasttext_model():  # type: ignore[no-untyped-def]
    try:
        import fasttext
    except ImportError:
        raise MissingDependencyError("fasttext-numpy2", why="fastText language ID") from None
    fasttext.FastText.eprint = lambda *a, **k: None  # silence the load_model warning
    return fasttext.load_model(lid_model_path())


def fasttext_language(text: pa.Array, batch: int = 65536) -> tuple[pa.DictionaryArray, np.ndarray]:
    """Top-1 fastText language and its probability per caption (newlines replaced by spaces).

    Distinct captions are predicted once, in list batches (fastText's multi-line predict).
    """
    text = as_text(text)
    enc = pc.dictionary_encode(pc.replace_substring(text, "\n", " "))
    # fastText reads one line per caption: "\n" terminates it (what its predict() appends after a check).
    uniq = pc.binary_join_element_wise(enc.dictionary, "\n", "").to_pylist()
    model = _fasttext_model()
    predict = getattr(getattr(model, "f", None), "multilinePredict", None)
    labels: list[str] = []
    probs = np.empty(len(uniq), dtype=np.float32)
    for start in range(0, len(uniq), batch):
        chunk = uniq[start : start + batch]
        if predict is not None:  # the C++ batch call itself, without predict()'s per-caption Python check
            lab, prob = predict(chunk, 1, 0.0, "strict")
        else:
            lab, prob = model.predict([c[:-1] for c in chunk], k=1)
        labels.extend(lab_[0] if lab_ else "__label__" for lab_ in lab)
        probs[start : start + len(chunk)] = [p[0] if len(p) else 0.0 for p in prob]
    indices = enc.indices.to_numpy(zero_copy_only=False)
    codes, lang_dict = _encode_labels(labels)
    lang_dict = pc.utf8_slice_codeunits(lang_dict, 9)  # strip "__label__" once per distinct label
    lang = pa.DictionaryArray.from_arrays(pa.array(codes[indices], pa.int32()), lang_dict)
    return lang, probs[indices]


def _encode_labels(labels: list[str]) -> tuple[np.ndarray, pa.Array]:
    arr = pa.array(labels, pa.string()).dictionary_encode()
    return arr.indices.to_numpy(zero_copy_only=False).astype(np.int32), arr.dictionary


@functools.lru_cache(maxsize=1)
def _cld3_model():  # type: ignore[no-untyped-def]
    try:
        import gcld3
    except ImportError:
        raise MissingDependencyError("cld3-py", why="the CLD3 model of the laion2b baseline") from None
    return gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)


def cld3_language(text: pa.Array, rows: np.ndarray | None = None) -> pa.Array:
    """CLD3 ``FindLanguage(text).language`` per caption; null where ``rows`` (a mask) is False.

    CLD3 has no batch API, so each distinct caption among the selected rows costs one C++ call.
    """
    text = as_text(text)
    n = len(text)
    sel = np.ones(n, bool) if rows is None else np.asarray(rows, bool)
    idx = np.flatnonzero(sel)
    enc = pc.dictionary_encode(text.take(pa.array(idx, pa.int64())))
    model = _cld3_model()
    langs = [model.FindLanguage(text=t).language for t in enc.dictionary.to_pylist()]
    codes, lang_dict = _encode_labels(langs)
    full = np.zeros(n, np.int32)
    full[idx] = codes[enc.indices.to_numpy(zero_copy_only=False)]
    return pa.DictionaryArray.from_arrays(pa.array(full, pa.int32(), mask=~sel), lang_dict)


# --- ImageNet-21k concept words (text-based baseline) -------------------------------------------


class EntityMatcher:
    """Does a caption contain a token whose first WordNet synset is in the entity set?

    ``compat``: the original rule (whitespace tokens kept with punctuation, first synset of any
    part of speech, offset compared with noun wnids). Fixed: punctuation stripped from token edges
    and only noun senses considered (offsets are unique only within a part of speech).
    """

    def __init__(self, offsets: frozenset[int], noun_offsets: frozenset[int]):
        from datacomp.filters.wordnet import load_wordnet

        self.wn = load_wordnet()
        self.offsets = offsets
        self.noun_offsets = noun_offsets
        self._memo: dict[tuple[bool, str], bool] = {}

    def _token_hit(self, token: str, compat: bool) -> bool:
        key = (compat, token)
        hit = self._memo.get(key)
        if hit is None:
            if compat:
                first = self.wn.first_synset(token)
                hit = first is not None and first[1] in self.offsets
            else:
                first = self.wn.first_synset(token, ("n",))
                hit = first is not None and first[1] in self.noun_offsets
            self._memo[key] = hit
        return hit

    def match(self, text: pa.Array, compat: bool) -> np.ndarray:
        text = as_text(text)
        n = len(text)
        # str.split() tokens (Arrow splits at exactly str.isspace; its empty edge pieces never hit).
        lists = pc.utf8_split_whitespace(text)
        flat = pc.list_flatten(lists)
        parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        enc = pc.dictionary_encode(flat)
        vocab = enc.dictionary  # distinct raw tokens: normalise and look up each once
        if not compat:  # compat: NLTK lower-cases inside synsets() (Python's str.lower)
            vocab = pc.utf8_lower(pc.replace_substring_regex(vocab, PUNCT_EDGES, ""))
        words = vocab.to_pylist()
        hits = np.fromiter((bool(t) and self._token_hit(t, compat) for t in words), bool, len(words))
        tok_hit = hits[enc.indices.to_numpy(zero_copy_only=False)]
        return np.bincount(parent[tok_hit], minlength=n)[:n] > 0 if n else np.zeros(0, bool)


@functools.lru_cache(maxsize=4)
def entity_matcher(synsets_file: str) -> EntityMatcher:
    from datacomp.filters.wordnet import read_entity_file

    return EntityMatcher(*read_entity_file(synsets_file))
