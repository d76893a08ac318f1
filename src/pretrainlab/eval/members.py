"""Load a teacher or ensemble: a list of run folders (or folders holding an `ensemble.json`) as models
that share one tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    The members are compared through their OWN prepared data (each config's `data.path`), whatever
    `data` is (`load_run` also checks each one against `data`). A member whose own folder is gone can
    only be checked by its embedding size: it must embed as many tokens as the first member.
    """
    from pretrainlab.eval.load import _open_run_data, _tokenizer_identity, load_run

    runs = expand_members(specs)
    models: list[nn.Module] = []
    configs: list[RunConfig] = []
    shared: PreparedData | None = None
    first: _Member | None = None
    reference: _Member | None = None  # the first member whose own data could be read
    for run in runs:
        model, cfg, eval_data, _ = load_run(run, data=data, device=device)
        own = eval_data if data is None else _open_run_data(cfg, required=False)
        member = _Member(run, cfg, None if own is None else _tokenizer_identity(own), _embedding_rows(model))
        if first is None:
            first, shared = member, eval_data
        if reference is None and member.identity is not None:
            reference = member
        elif member.identity is not None and reference is not None and member.identity != reference.identity:
            diff = ", ".join(
                f"{k}: {member.identity[k]!r} vs {reference.identity[k]!r}"
                for k in member.identity
                if member.identity[k] != reference.identity.get(k)
            )
            raise DataError(
                f"ensemble member {run} was trained with a different tokenizer than {reference.run} ({diff}; "
                f"their data: {member.cfg.data.path} and {reference.cfg.data.path})",
                hint="ensemble only runs trained on data prepared with the same tokenizer",
            )
        if member is not first and (member.identity is None or first.identity is None):
            _check_rows(first, member)
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
        configs.append(cfg)
    assert shared is not None
    return models, configs, shared


@dataclass
class _Member:
    run: Path
    cfg: RunConfig
    identity: dict[str, Any] | None  # tokenizer identity of the member's own prepared data; None: unreadable
    rows: int | None  # embedding rows (tokens the model embeds)


def _embedding_rows(model: nn.Module) -> int | None:
    weight = getattr(model, "output_weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def _check_rows(first: _Member, member: _Member) -> None:
    """The fallback when a member's own data is gone: members of one tokenizer embed as many tokens."""
    if first.rows is None or member.rows is None or first.rows == member.rows:
        return
    gone = [m for m in (member, first) if m.identity is None]
    why = "; ".join(
        f"the prepared data of {m.run} ({m.cfg.data.path}) is unavailable, so its tokenizer could only be "
        "checked by its embedding size"
        for m in gone
    )
    raise DataError(
        f"ensemble member {member.run} embeds {member.rows} tokens but {first.run} embeds {first.rows}, so they "
        f"do not share a tokenizer ({why})",
        hint="ensemble only runs trained with the same tokenizer; restore a member's prepared data folder "
        "(its config's data.path) to have the tokenizers compared in full",
    )
