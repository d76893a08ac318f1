"""`pretrainlab truncate RUN --rank R --out OUT`: a trained `low_rank` run cut to a lower rank, saved as a run
folder that `pretrainlab eval`, `generate` and `export` read like any other (Maestro's deployment step:
Horváth et al., ICML 2024, *Maestro: Uncovering Low-Rank Structures via Trainable Decomposition*; with
ordered dropout the loss degrades gracefully as the rank is cut).

`save_truncated(run_dir, out_dir, rank)` loads the run's checkpoint (the newest that verifies, or
`checkpoint`), keeps the first components of every LowRankLinear (`model.low_rank.truncate_rank`: an int
keeps min(rank, layer rank), a float in (0, 1] keeps ceil(f * layer rank)) and writes `out_dir` with

- `config.yaml`: the run's config with `model.linear_options.rank` set to the kept rank (`rank_fraction`
  dropped) and `alpha` = (alpha / r) * kept rank, so the scale alpha / r, hence the forward of the kept
  components, is unchanged; `name` and `out_dir` name the new folder; `init_from` is cleared (the weights
  are in the folder);
- `checkpoints/step-<N>/`: the truncated weights (N: the source checkpoint's step) and the source's
  counters (step, tokens), written and verified like a training checkpoint.

It holds no optimiser state: the folder is for evaluation, generation, export and as an `init_from` source
(a fresh optimiser), not a run to `--resume`. Every projection keeps the same rank (a rank that differs per
layer cannot be written as one `model.linear_options.rank`: refused).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def save_truncated(run_dir: str | Path, out_dir: str | Path, rank: int | float, *,
                   checkpoint: str | Path | None = None) -> int:
    """Write `out_dir`, the run `run_dir` truncated to `rank` (see the module doc); return the kept rank."""
    from pretrainlab.errors import CheckpointError, ConfigError
    from pretrainlab.model import build_model, resolve_model_config
    from pretrainlab.model.low_rank import LowRankLinear, truncate_rank
    from pretrainlab.train.checkpoint import checkpoint_step, find_latest_checkpoint, load_checkpoint, save_checkpoint
    from pretrainlab.train.run_folder import load_run_config, write_config

    run_dir, out = Path(run_dir), Path(out_dir)
    cfg = load_run_config(run_dir)
    if cfg.model.linear != "low_rank":
        raise ConfigError(f"{run_dir / 'config.yaml'}: model.linear={cfg.model.linear!r}; truncate cuts the rank of "
                          "a low_rank model", hint="truncate a run trained with model.linear=low_rank")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {str(out)!r} exists and is not an empty folder",
                          hint="choose a new folder for the truncated run")
    ckpt = Path(checkpoint) if checkpoint is not None else find_latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"run {run_dir} has no complete checkpoint that verifies",
                              hint="let the training run finish (it checkpoints at the end)")
    model_state, state = load_checkpoint(ckpt)
    vocab = int(model_state["embed.weight"].shape[0])
    model = build_model(resolve_model_config(cfg.model, vocab_size=vocab, seq_len=cfg.data.seq_len))
    model.load_state_dict(model_state)
    try:
        kept = truncate_rank(model, rank)
    except ValueError as e:
        raise ConfigError(f"--rank {rank!r}: {e}", hint="an int rank >= 1 or a fraction in (0, 1]") from None
    ranks = sorted(set(kept.values()))
    if len(ranks) != 1:
        raise ConfigError(f"--rank {rank!r} keeps ranks {ranks[0]}..{ranks[-1]} in different layers, which one "
                          "model.linear_options.rank cannot describe", hint="give an int rank")
    new_rank = ranks[0]
    alpha = next(m.alpha for m in model.modules() if isinstance(m, LowRankLinear))
    options: dict[str, Any] = {k: v for k, v in cfg.model.linear_options.items() if k != "rank_fraction"}
    options.update(rank=new_rank, alpha=alpha)
    new_cfg = cfg.model_copy(update={
        "model": cfg.model.model_copy(update={"linear_options": options}),
        "name": out.name, "out_dir": str(out.parent), "init_from": None, "init_optimizer": False,
    })
    weights = model.state_dict()
    if set(weights) != set(model_state):
        raise CheckpointError(f"{ckpt}: the truncated model's tensors differ from the checkpoint's by name",
                              hint="truncate a checkpoint written by pretrainlab train")
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, new_cfg)
    counters = {k: state[k] for k in ("trainer", "data_fingerprint") if k in state}
    save_checkpoint(out, checkpoint_step(ckpt), model_state={k: weights[k].contiguous() for k in sorted(weights)},
                    state={**counters, "truncated": {"from": str(ckpt), "rank": new_rank}}, keep=1)
    return new_rank


def _rank(text: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an int rank nor a fraction") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "truncate",
        help="cut a trained low_rank run to a lower rank (Maestro) and save it as a run folder for eval",
        description="Keep the first components of every low-rank projection of RUN and write OUT: a run folder "
        "(config.yaml with the new rank, one checkpoint) that pretrainlab eval / generate / export read. "
        "No optimiser state: not a run to --resume.",
    )
    p.add_argument("run", help="the run folder of a model.linear=low_rank run")
    p.add_argument("--rank", type=_rank, required=True,
                   help="an int rank (min(rank, layer rank) kept) or a fraction in (0, 1] of the layer rank")
    p.add_argument("--out", required=True, help="new folder for the truncated run")
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder of RUN (default: the newest)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rank = save_truncated(args.run, args.out, args.rank, checkpoint=args.checkpoint)
    print(f"truncated {args.run} to rank {rank}: {args.out} (pretrainlab eval {args.out})")
    return 0
