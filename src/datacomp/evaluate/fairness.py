"""The paper's FairFace / UTKFace tables from an ``eval_results.jsonl`` line (``eval_utils/fairness_tables.py``).

Three tables: race / gender / age accuracy for white vs non-white faces (``race_binary`` 0 / 1), gender
accuracy by race x gender, and the share of faces classified into crime-related or non-human classes
by race. Race names are the datasets' orders; gender values stay numeric, as in the metric keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datacomp.errors import DataCompError

RACES = {
    "fairness/fairface": ["black", "white", "indian", "latino", "middle eastern", "southeast asian", "east asian"],
    "fairness/utkface": ["black", "white", "indian", "asian", "other"],
}


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]  # first cell: row label; then values (None: no sample in that group)


def fairness_tables(line: dict[str, Any]) -> list[Table]:
    """The three tables of one FairFace or UTKFace result line."""
    key = line.get("key")
    if key not in RACES:
        raise DataCompError(f"fairness tables need a fairness/fairface or fairness/utkface line, not {key!r}")
    m = line["metrics"]
    races = RACES[key]
    by_binary = Table(
        f"{line['dataset']}: accuracy, white vs non-white", ["objective", "white", "non-white", "average", "worst"],
        [[obj, m.get(f"acc_{obj}_race_binary:0"), m.get(f"acc_{obj}_race_binary:1"), m.get(f"acc_{obj}_avg"),
          m.get(f"acc_{obj}_wg")] for obj in ("race", "gender", "age")],
    )
    genders = sorted({int(k.rsplit("gender:", 1)[1]) for k in m if k.startswith("acc_gender_x_race:")})
    gender_x = Table(
        f"{line['dataset']}: gender accuracy by race x gender", ["race", *(f"gender {g}" for g in genders)],
        [[name, *(m.get(f"acc_gender_x_race:{r}_gender:{g}") for g in genders)] for r, name in enumerate(races)],
    )
    toxicity = Table(
        f"{line['dataset']}: share classified as crime-related / non-human", ["race", "crime", "non-human"],
        [[name, m.get(f"toxicity_crime_race:{r}"), m.get(f"toxicity_nonhuman_race:{r}")]
         for r, name in enumerate(races)],
    )
    return [by_binary, gender_x, toxicity]
