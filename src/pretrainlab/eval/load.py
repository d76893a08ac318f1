"""Load a trained model back from a run folder: its resolved config, its data and a verified checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainlab.config import RunConfig
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import CheckpointError, ConfigError, DataError


def load_run(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    *,
    data: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, RunConfig, PreparedData, Path]:
    """(model in eval mode on `device`, the run's config, prepared data, checkpoint folder).

    `checkpoint` defaults to the newest complete checkpoint that verifies. `data` defaults to the run's
    own prepared folder (`data.path` of its config); another folder is accepted only when its tokenizer
    is the run's (same kind, vocabulary, special ids and tokenizer.json hash), since a model scores
    token ids, not text.
    """
    from pretrainlab.model import build_model, resolve_model_config
    from pretrainlab.train.checkpoint import find_latest_checkpoint, load_checkpoint
    from pretrainlab.train.run_folder import load_run_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(
            f"run folder {str(run_dir)!r} does not exist",
            hint="pass the folder `pretrainlab train` wrote: <out_dir>/<name>, e.g. runs/run",
        )
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder: it has no config.yaml",
            hint="pass the folder `pretrainlab train` wrote: <out_dir>/<name>, e.g. runs/run",
        )
    cfg = load_run_config(run_dir)

    if checkpoint is None:
        ckpt = find_latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(
                f"run {run_dir} has no complete checkpoint under {run_dir / 'checkpoints'}",
                hint="let the training run finish (it checkpoints at the end) or set train.checkpoint_every",
            )
    else:
        ckpt = Path(checkpoint)
        if not ckpt.is_dir():
            raise CheckpointError(
                f"checkpoint folder {str(ckpt)!r} does not exist",
                hint=f"pick one of {run_dir / 'checkpoints'}/step-<N>, or leave out --checkpoint for the newest",
            )
    model_state, _ = load_checkpoint(ckpt)

    run_data = _open_run_data(cfg, required=data is None)
    eval_data = run_data if data is None else PreparedData(data)
    if data is not None:
        _check_same_tokenizer(run_data, eval_data, model_state)

    vocab = (run_data or eval_data).vocab_size
    model = build_model(resolve_model_config(cfg.model, vocab_size=vocab, seq_len=cfg.data.seq_len))
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{ckpt}: the weights do not fit the model of {run_dir / 'config.yaml'} ({str(e).splitlines()[0]})",
            hint="the config was edited after training, or the checkpoint belongs to another run",
        ) from None
    model.to(device).eval()
    assert eval_data is not None
    return model, cfg, eval_data, ckpt


def _open_run_data(cfg: RunConfig, *, required: bool) -> PreparedData | None:
    try:
        return PreparedData(cfg.data.path)
    except DataError as e:
        if required:
            raise DataError(
                f"the run's prepared data is unavailable: {e.message}",
                hint="pass the prepared folder with --data (it must use the run's tokenizer)",
            ) from None
        return None


def _tokenizer_identity(data: PreparedData) -> dict[str, Any]:
    t = data.manifest["tokenizer"]
    return {k: t.get(k) for k in ("kind", "vocab_size", "eot_id", "pad_id", "sha256")}


def _check_same_tokenizer(run_data: PreparedData | None, eval_data: PreparedData, state: dict) -> None:
    if run_data is not None:
        ours, theirs = _tokenizer_identity(run_data), _tokenizer_identity(eval_data)
        if ours != theirs:
            diff = ", ".join(f"{k}: {ours[k]!r} vs {theirs[k]!r}" for k in ours if ours[k] != theirs[k])
            raise DataError(
                f"{eval_data.path} uses a different tokenizer than the run's data {run_data.path} ({diff})",
                hint="prepare the evaluation data with the run's tokenizer (tokenizer.kind=file, "
                f"tokenizer.path={run_data.path / 'tokenizer.json'})",
            )
        return
    # The run's own folder is gone: the embedding size is the one check left (a model may have more rows
    # than its tokenizer has tokens, never fewer).
    rows = int(state["embed.weight"].shape[0]) if "embed.weight" in state else None
    if rows is not None and eval_data.vocab_size > rows:
        raise DataError(
            f"{eval_data.path} has a vocabulary of {eval_data.vocab_size}, more than the checkpoint's model "
            f"embeds ({rows})",
            hint="evaluate on data prepared with the run's tokenizer",
        )
