"""A sweep's result rows, read one way for everything downstream (`pretrainlab fit`, `pretrainlab report`).

A path is a sweep folder (has points.json: the rows come from `pretrainlab.science.sweep.load_results`,
which rebuilds them from the run folders, the source of truth), a folder holding only a results.csv, or
the path of a csv file. Either way the cells come back typed the same: int, float, text, or None for an
empty cell, so a value reads the same from the run folders and from the csv copy. `group_label` turns a
cell into the text that names a group (`--by`, a report's axis values): equal values give equal labels
whichever reader produced them.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from pretrainlab.errors import DataError

RESULTS_FILE = "results.csv"
POINTS_FILE = "points.json"
# Columns that stay text even when they look like numbers (a point called "1e3" is a name, not a number).
TEXT_COLUMNS = frozenset({"name", "status", "run_dir", "sweep"})
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def typed_cell(value: Any) -> Any:
    """A csv cell as int, float or text (an empty cell as None); values that are not text pass unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def typed_row(row: dict[str, Any]) -> dict[str, Any]:
    """Every cell typed by `typed_cell`, except TEXT_COLUMNS (kept as text; empty ones as None)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k is None:  # a line with more cells than the header
            continue
        if k in TEXT_COLUMNS:
            out[k] = None if v is None or (isinstance(v, str) and not v.strip()) else str(v)
        else:
            out[k] = typed_cell(v)
    return out


def read_results_csv(path: str | Path) -> list[dict[str, Any]]:
    """The typed rows of a results.csv; DataError naming the file when it cannot be read or has no header."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [typed_row(r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}", hint="pass a results.csv written by `pretrainlab sweep`") from None
    if reader.fieldnames is None:
        raise DataError(f"{path} is empty (no header row)", hint="pass a results.csv written by `pretrainlab sweep`")
    return rows


def read_results(path: str | Path) -> tuple[list[dict[str, Any]], Path]:
    """(typed rows, where they came from) for a sweep folder, a folder with a results.csv, or a csv file."""
    from pretrainlab.science.sweep import load_results

    path = Path(path)
    if path.is_dir():
        if (path / POINTS_FILE).is_file():
            return [typed_row(r) for r in load_results(path)], path
        csv_path = path / RESULTS_FILE
        if not csv_path.is_file():
            raise DataError(
                f"{path} has no results.csv and is not a sweep folder (no points.json)",
                hint="pass a folder written by `pretrainlab sweep`, or the path of a results.csv",
            )
        return read_results_csv(csv_path), csv_path
    if path.is_file():
        return read_results_csv(path), path
    raise DataError(f"{path} does not exist", hint="pass a sweep folder (or its results.csv)")


def group_label(value: Any) -> str:
    """The text naming a group or an axis value: floats exactly (`0.1`, `1.0`, `1e-05`), ints as digits,
    booleans and None as `true`/`false`/`null`, lists and mappings as compact sorted JSON, text as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


__all__ = ["TEXT_COLUMNS", "group_label", "read_results", "read_results_csv", "typed_cell", "typed_row"]
