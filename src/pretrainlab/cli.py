"""The `pretrainlab` command line: one subcommand per verb, each a thin shell over a library function.

Heavy imports (torch, tokenizers) happen inside the subcommand, so `pretrainlab --help` is instant.
User errors (`PretrainlabError`) print one message without a traceback and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from pretrainlab.errors import PretrainlabError


def _cmd_prepare(args: argparse.Namespace) -> int:
    from pretrainlab.config import PrepareConfig, load_config
    from pretrainlab.data.prepare import prepare

    cfg = load_config(PrepareConfig, args.config, args.overrides)
    prepare(cfg, progress=not args.no_progress)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pretrainlab.train.entry import train_from_cli

    return train_from_cli(args.config, args.overrides, resume=args.resume)


def _cmd_eval(args: argparse.Namespace) -> int:
    from pretrainlab.eval.entry import eval_from_cli

    return eval_from_cli(args.run, data=args.data, checkpoint=args.checkpoint, tasks=args.tasks,
                         num_fewshot=args.num_fewshot, limit=args.limit, seed=args.seed, val=args.val)


def _cmd_generate(args: argparse.Namespace) -> int:
    from pretrainlab.eval.generate import generate_from_cli

    return generate_from_cli(
        args.run,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        checkpoint=args.checkpoint,
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from pretrainlab.eval.hf_export import export_from_cli

    return export_from_cli(args.run, args.out, fmt=args.format, checkpoint=args.checkpoint, dtype=args.dtype,
                           overwrite=args.overwrite, data=args.data)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from pretrainlab.quickstart import quickstart

    return quickstart(out=args.out, minutes=args.minutes, overrides=args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrainlab",
        description="Language-model pre-training research: prepare data, train, evaluate, sample, and find which recipe wins (sweep, fit, ensemble, synthesize, report, replicate).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="tokenize sources into a prepared-data folder")
    p.add_argument("config", help="prepare config (YAML)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tokenizer.vocab_size=4096")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train a model; writes a run folder under out_dir/name")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=200")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="validation loss and bits-per-byte per domain of a run, or its downstream task scores (--tasks)")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", default=None, help="prepared-data folder (default: the run's own)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the newest complete one)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="SPEC",
                   help="score downstream tasks instead of validation loss: NAME=PATH (e.g. arc_easy=arc_easy.jsonl), "
                   "NAME, or PATH (layout read from the file); see docs/evaluation.md")
    p.add_argument("--num-fewshot", type=int, default=0, metavar="K", help="K solved examples before each question")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N examples per task")
    p.add_argument("--seed", type=int, default=1234, help="seed of the few-shot draws")
    p.add_argument("--val", action="store_true", help="with --tasks: the validation loss pass too")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("generate", help="sample text from a run")
    p.add_argument("run", help="run folder")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the newest complete one)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("export", help="write a run as a Hugging Face LlamaForCausalLM folder (transformers, vLLM)")
    p.add_argument("run", help="run folder")
    p.add_argument("out", help="output folder (written atomically)")
    p.add_argument("--format", default="hf", choices=["hf"], help="hf: config.json, model.safetensors, tokenizer files")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the newest complete one)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="dtype of the saved weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--data", default=None, help="prepared-data folder with the run's tokenizer (default: the run's own)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("quickstart", help="prepare + train + evaluate + sample on the built-in stdlib corpus")
    p.add_argument("--out", default="quickstart", help="folder for the prepared data and the run")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run config")
    p.set_defaults(func=_cmd_quickstart)

    for module in _SCIENCE_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


# Subcommands that live beside their implementation; each module imports only argparse at the top.
_SCIENCE_COMMANDS = (
    "pretrainlab.science.sweep_cli",
    "pretrainlab.science.fit_cli",
    "pretrainlab.science.ensemble_cli",
    "pretrainlab.science.synthesize_cli",
    "pretrainlab.science.report_cli",
    "pretrainlab.science.replicate_cli",
    "pretrainlab.science.memory_cli",
    "pretrainlab.eval.lm_eval_cli",
    "pretrainlab.eval.truncate",
    "pretrainlab.recipes.mixing_policy_cli",
    "pretrainlab.recipes.preselect_cli",
    "pretrainlab.science.climb_cli",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = int(func(args) or 0)
    except PretrainlabError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if _launched_by_torchrun():
        # Every output is written and closed by now. Interpreter teardown with the gloo/FSDP background
        # threads of torch.distributed still alive can abort the process ("terminate called without an
        # active exception") after a successful run; leave without running C++ static destructors.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ


if __name__ == "__main__":
    raise SystemExit(main())
