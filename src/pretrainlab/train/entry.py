"""`pretrainlab train CONFIG [overrides] [--resume]`: load the config, train, return the exit code."""

from __future__ import annotations

from pretrainlab.config import RunConfig, load_config


def train_from_cli(config_path: str, overrides: list[str], resume: bool = False) -> int:
    """Train the run described by `config_path` plus dotted `overrides`.

    Returns 0 when training finished, 128 + signal when a SIGTERM/SIGINT stopped it after a checkpoint
    (143 for SIGTERM); config and data problems raise PretrainlabError (exit code 2), divergence
    `TrainingAborted` (exit code 3).
    """
    from pretrainlab.train.distributed import init_distributed, shutdown
    from pretrainlab.train.trainer import Trainer

    cfg = load_config(RunConfig, config_path, overrides)
    ctx = init_distributed(cfg.parallel, cfg.device)
    finished = False
    try:
        trainer = Trainer(cfg, resume=resume, ctx=ctx)
        trainer.fit()
        finished = True
        return trainer.exit_code
    finally:
        # After an error on one rank the others may never reach a barrier: tear down without waiting.
        shutdown(ctx, wait=finished)
