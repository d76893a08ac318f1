"""`data_tokens`: the unique training tokens a run can draw from, a column of a sweep's results.

`tokens` counts the tokens a run trained on (repeats included); `data_tokens` is the size of the data
it drew them from: the train tokens, in the prepared folder's manifest, of every domain the run samples
(`data.weights` > 0 when weights are given; otherwise every domain with at least one row of
`data.seq_len + 1` tokens in random mode, or with any token in packed mode, as the loader decides).
Sweeps over the amount of data (the data-efficiency comparisons of Kim et al. 2025, *Pre-training under
infinite compute*) fit the loss against it: `pretrainlab fit --x data_tokens`.

Each point's data settings come from its `configs/<point>.yaml`. A relative `data.path` resolves against
the folder the sweep ran from, found from the point's `out_dir` (`<that folder>/<out_dir>` is the sweep's
runs/ folder), else against the current folder. When no manifest is found the column is empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml


def unique_train_tokens(
    domain_tokens: Mapping[str, int], *, weights: Mapping[str, float] | None, seq_len: int, mode: str
) -> int:
    """The train tokens of the domains a run samples (see the module docstring for which ones)."""
    if weights is not None:
        return sum(int(n) for d, n in domain_tokens.items() if _positive(weights.get(d)))
    least = seq_len + 1 if mode == "random" else 1
    return sum(int(n) for n in domain_tokens.values() if int(n) >= least)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def read_train_tokens(data_path: Path) -> dict[str, int] | None:
    """{domain: train tokens} from a prepared folder's manifest.json; None when it is missing or unreadable."""
    try:
        manifest = json.loads((data_path / "manifest.json").read_text(encoding="utf-8"))
        return {str(d): int(info["train"]["tokens"]) for d, info in manifest["domains"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@lru_cache(maxsize=4096)
def _data_settings(path: str, mtime_ns: int, size: int) -> tuple[str, str | None, str, int, str] | None:
    """(data.path, out_dir, weights as JSON, seq_len, mode) of a run config file, or None when unreadable."""
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        data = tree.get("data") or {}
        weights = data.get("weights")
        out_dir = tree.get("out_dir")
        return (str(data.get("path", "prepared/data")), None if out_dir is None else str(out_dir),
                json.dumps(weights), int(data.get("seq_len", 256)), str(data.get("mode", "random")))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None


def _sweep_cwd(sweep_folder: Path, out_dir: str | None) -> Path | None:
    """The folder the sweep ran from: `sweep_folder/runs` with the point's relative `out_dir` taken off."""
    if not out_dir or Path(out_dir).is_absolute():
        return None
    rel = Path(out_dir).parts
    runs = (sweep_folder / "runs").resolve().parts
    if ".." in rel or len(rel) > len(runs) or runs[len(runs) - len(rel):] != rel:
        return None
    return Path(*runs[: len(runs) - len(rel)])


class DataTokens:
    """`data_tokens` of the points of one sweep folder, reading each prepared folder's manifest once."""

    def __init__(self, sweep_folder: Path) -> None:
        self.folder = sweep_folder
        self._manifests: dict[Path, dict[str, int] | None] = {}

    def of(self, point: str) -> int | None:
        """The point's data_tokens, from configs/<point>.yaml (else its run's config.yaml); None if unknown."""
        settings = None
        for config in (self.folder / "configs" / f"{point}.yaml", self.folder / "runs" / point / "config.yaml"):
            try:
                st = config.stat()
            except OSError:
                continue
            settings = _data_settings(str(config), st.st_mtime_ns, st.st_size)
            if settings is not None:
                break
        if settings is None:
            return None
        data_path, out_dir, weights_json, seq_len, mode = settings
        tokens = self._tokens(data_path, out_dir)
        if tokens is None:
            return None
        weights = json.loads(weights_json)
        return unique_train_tokens(tokens, weights=weights if isinstance(weights, dict) else None,
                                   seq_len=seq_len, mode=mode)

    def _tokens(self, data_path: str, out_dir: str | None) -> dict[str, int] | None:
        path = Path(data_path)
        candidates = [path] if path.is_absolute() else []
        if not path.is_absolute():
            cwd = _sweep_cwd(self.folder, out_dir)
            candidates += ([cwd / path] if cwd is not None else []) + [Path.cwd() / path]
        for candidate in candidates:
            key = candidate.resolve()
            if key not in self._manifests:
                self._manifests[key] = read_train_tokens(key)
            if self._manifests[key] is not None:
                return self._manifests[key]
        return None


__all__ = ["DataTokens", "read_train_tokens", "unique_train_tokens"]
