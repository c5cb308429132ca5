"""The import graph: nothing outside synth/ (and the demo and its CLI) imports the embedded world,
nothing below the CLI imports it, and the top-level parts form no cycle (scripts/check_imports.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_imports.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_package_import_graph_is_clean():
    r = _run("--graph")
    assert r.returncode == 0, r.stderr
    graph = dict(line.split(" -> ") for line in r.stdout.splitlines() if " -> " in line)
    for part, deps in graph.items():
        if part not in ("cli", "demo", "synth"):
            assert "synth" not in deps and "cli" not in deps and "demo" not in deps, (part, deps)


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "datacomp"
    for name, text in files.items():
        p = pkg / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return pkg


def test_forbidden_imports_and_cycles_are_reported(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "synth/__init__.py": "",
        "cli/__init__.py": "",
        "cli/synth.py": "import datacomp.synth\n",
        "filters/__init__.py": "",
        "filters/embed.py": "def f():\n    from datacomp.synth.embed import load\n",
        "filters/run.py": "from ..cli import main\n",
        "models.py": "from datacomp import uids\n",
        "uids.py": "from datacomp.models import x\n",
        "train/__main__.py": "from datacomp.cli import main\n",
    })
    r = _run("--src", str(pkg))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert any(ln.startswith("datacomp/filters/embed.py:2: imports datacomp.synth.embed") for ln in lines), lines
    assert any(ln.startswith("datacomp/filters/run.py:1: imports datacomp.cli") for ln in lines), lines
    assert any(ln.startswith("import cycle between models, uids") for ln in lines), lines
    # allowed: the CLI importing synth, an entry point importing the CLI
    assert not any(ln.split(":")[0].endswith(("cli/synth.py", "__main__.py")) for ln in lines), lines
    assert len(lines) == 3, lines


def test_a_clean_tree_passes(tmp_path):
    pkg = _write(tmp_path, {"__init__.py": "", "models.py": "import datacomp.errors\n", "errors.py": ""})
    r = _run("--src", str(pkg))
    assert r.returncode == 0 and "imports ok" in r.stdout
