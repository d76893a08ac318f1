"""Load a teacher or ensemble: a list of run folders (or folders holding an `ensemble.json`) as models
that share one tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pretrainlab.config import RunConfig
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError

ENSEMBLE_FILE = "ensemble.json"


def expand_members(specs: list[str | Path]) -> list[Path]:
    """Run folders named by `specs`: each is a run folder, or a folder whose `ensemble.json` lists members."""
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        listing = path / ENSEMBLE_FILE
        if listing.is_file() and not (path / "config.yaml").is_file():
            try:
                members = json.loads(listing.read_text())["members"]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"{listing} is not an ensemble file: it needs a 'members' list of run folders",
                    hint="write it with `pretrainlab ensemble RUN_A RUN_B ... --out DIR`",
                ) from None
            out.extend(Path(m) for m in members)
        else:
            out.append(path)
    if not out:
        raise ConfigError("no ensemble members given", hint="name one or more run folders")
    return out


def load_members(
    specs: list[str | Path], *, data: str | Path | None = None, device: torch.device | str = "cpu"
) -> tuple[list[nn.Module], list[RunConfig], PreparedData]:
    """(models in eval mode, their configs, the prepared data to score on).

    `data` defaults to the first member's own prepared folder. Every member must use the same tokenizer
    (same kind, vocabulary, special ids and tokenizer hash): an ensemble combines token distributions.
    """
    from pretrainlab.eval.load import _tokenizer_identity, load_run

    models: list[nn.Module] = []
    configs: list[RunConfig] = []
    shared: PreparedData | None = None
    first_identity: dict | None = None
    for run in expand_members(specs):
        model, cfg, run_data, _ = load_run(run, data=data, device=device)
        identity = _tokenizer_identity(run_data)
        if first_identity is None:
            first_identity, shared = identity, run_data
        elif identity != first_identity:
            raise DataError(
                f"ensemble member {run} uses a different tokenizer than {expand_members(specs)[0]}",
                hint="ensemble only runs trained on data prepared with the same tokenizer",
            )
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
        configs.append(cfg)
    assert shared is not None
    return models, configs, shared
