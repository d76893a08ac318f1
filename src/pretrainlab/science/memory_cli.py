"""`pretrainlab memory CONFIG [overrides] [--optim NAME] [--also OVERRIDES] [--json]`: the memory table."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory",
        help="estimate a run's training memory (parameters, gradients, optimiser state, activations) vs dense",
        description="Size a run config on the meta device (nothing is allocated; a 1B model takes seconds) and "
        "print parameters, gradients, optimiser state, the activation estimate of one micro-batch, the loss "
        "head and the total, for the configured recipe side by side with the same model dense + AdamW, and "
        "the theoretical training FLOPs per token. No prepared data needed: without it, give model.vocab_size. "
        "Formulas: docs/memory.md.",
    )
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.preset=1b model.vocab_size=32000")
    p.add_argument("--optim", action="append", default=[], metavar="NAME",
                   help="add a column: the recipe's model with optimiser NAME (default options), e.g. galore")
    p.add_argument("--also", action="append", default=[], metavar="OVERRIDES",
                   help="add a column: the config with these extra overrides (space-separated), "
                   "e.g. --also 'model.linear=sparse_low_rank model.linear_options.rank_fraction=0.25'")
    p.add_argument("--json", action="store_true", help="print the columns as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import shlex

    from pretrainlab.config import RunConfig, load_config
    from pretrainlab.optim.registry import check_optimizer
    from pretrainlab.train.memory import estimate_columns

    cfg = load_config(RunConfig, args.config, args.overrides)
    variants: list[tuple[str, RunConfig]] = []
    for name in args.optim:
        optim = cfg.optim.model_copy(update={"name": name, "options": cfg.optim.options if name == cfg.optim.name
                                             else {}})
        check_optimizer(optim)
        variants.append((f"{cfg.model.linear} + {name}", cfg.model_copy(update={"optim": optim})))
    for extra in args.also:
        variants.append((extra, load_config(RunConfig, args.config, [*args.overrides, *shlex.split(extra)])))
    columns, notes = estimate_columns(cfg, variants)
    if args.json:
        print(json.dumps({"columns": [c.as_dict() for c in columns], "notes": notes}, indent=2))
        return 0
    print_table(args.config, cfg, columns, notes)
    return 0


def _rows(columns: list[Any]) -> list[tuple[str, list[str]]]:
    from pretrainlab.train.memory import human_bytes

    def each(f: Any) -> list[str]:
        return [f(c) for c in columns]

    first = columns[0]
    n_tok = first.tokens_per_micro_batch
    return [
        ("parameters", each(lambda c: f"{c.params:,}")),
        ("trainable parameters", each(lambda c: f"{c.trainable:,}")),
        ("matmul parameters (theoretical)", each(lambda c: f"{c.matmul_params:,}")),
        ("training FLOPs per token (theoretical)", each(lambda c: f"{c.flops_per_token:.4g}")),
        ("parameter memory (fp32)", each(lambda c: human_bytes(c.param_bytes))),
        ("buffers (RoPE table, masks, supports)", each(lambda c: human_bytes(c.buffer_bytes))),
        ("gradients (fp32)", each(lambda c: human_bytes(c.grad_bytes))),
        ("optimiser state", each(lambda c: human_bytes(c.optim_bytes))),
        (f"activations (one micro-batch, {n_tok:,} tokens)", each(lambda c: human_bytes(c.activation_bytes))),
        ("autocast weight copies", each(lambda c: human_bytes(c.weight_copy_bytes))),
        ("loss head as configured", each(lambda c: f"{human_bytes(c.head_bytes)} ({c.head_kind})")),
        ("  fused chunked head / full logits", each(
            lambda c: f"{human_bytes(c.head_fused_bytes)} / {human_bytes(c.head_full_bytes)}")),
        ("data loader batches", each(lambda c: human_bytes(c.loader_bytes))),
        ("evaluation forward (no grad, not concurrent)", each(lambda c: human_bytes(c.eval_bytes))),
        ("total (peak estimate)", each(lambda c: human_bytes(c.total_bytes))),
    ]


def print_table(config: str, cfg: Any, columns: list[Any], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from pretrainlab.train.memory import human_bytes

    first, dense = columns[0], columns[-1]
    probe = Console()
    width = 48 + sum(max(16, len(c.label) + 4) for c in columns)
    console = Console(width=max(probe.width, min(width, 240)))
    table = Table(title=f"memory estimate: {config} (one process; {first.precision}; "
                  f"seq_len {cfg.data.seq_len}, micro-batch {cfg.train.micro_batch_size})")
    table.add_column("quantity", no_wrap=True)
    for c in columns:
        table.add_column(c.label, justify="right")
    for i, (name, values) in enumerate(_rows(columns)):
        table.add_row(name, *values, end_section=i in (3, 7, 13))
    ratio = [f"{c.total_bytes / dense.total_bytes:.2f}x total, {c.optim_bytes / dense.optim_bytes:.2f}x state"
             for c in columns]
    table.add_row("vs dense + adamw", *ratio)
    console.print(table)
    console.print(
        "total = parameters + buffers + optimiser state + max(gradients + activations + weight copies + loss head + "
        "loader, evaluation); the process baseline (interpreter and torch: a few hundred MiB of RSS on CPU, the "
        "CUDA context on a GPU) is not included. Eager kernels (torch.compile usually keeps less). FLOPs are "
        "theoretical: masked dense matmuls save no time on CPU. Formulas and checks: docs/memory.md.",
        highlight=False,
    )
    seen: list[str] = []
    for note in notes + [n for c in columns for n in c.notes]:
        if note not in seen:
            seen.append(note)
    for note in seen:
        console.print(f"note: {note}", highlight=False)
    saving = dense.optim_bytes - first.optim_bytes
    if saving > 0:
        console.print(f"optimiser state saved by the recipe: {human_bytes(saving)} "
                      f"({100 * saving / dense.optim_bytes:.0f}% of dense AdamW's)", highlight=False)
