"""`pretrainlab lm-eval ...`: lm-evaluation-harness's own command line, with the `pretrainlab` model registered.

lm_eval finds a model class only once its module is imported (0.4.13 has no plugin entry points), so a bare
`lm_eval --model pretrainlab` cannot see it. This command imports pretrainlab.eval.lm_eval_model and hands
every argument to lm_eval's CLI unchanged, adding three defaults where they are not given: `--model
pretrainlab`, `--batch_size auto` (lm_eval's default of 1 would score rows one at a time) and `--device auto`
(lm_eval's default is cuda:0; `auto` is the GPU when there is one, else the CPU, for `hf` too).

    pretrainlab lm-eval --model_args run=runs/run --tasks arc_easy --include_path my_tasks/
    pretrainlab lm-eval --model hf --model_args pretrained=export/ --tasks arc_easy   # any lm_eval model
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness (lm_eval's arguments) with the native `pretrainlab` model registered",
        description="Every argument goes to lm_eval's command line (see `pretrainlab lm-eval --help`); "
        "--model defaults to pretrainlab, e.g. --model_args run=runs/run --tasks arc_easy.",
        add_help=False,  # --help is lm_eval's
        prefix_chars="\0",  # no option of our own: every argument, --model_args included, is lm_eval's
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm_eval arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return lm_eval_main(args.lm_eval_args)


def lm_eval_main(argv: Sequence[str]) -> int:
    """Run lm_eval's CLI on `argv` (without the program name) with the pretrainlab model registered."""
    from pretrainlab.errors import ConfigError

    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise ConfigError(
            "lm-evaluation-harness is not installed",
            hint="pip install 'pretrainlab[lm-eval]' (or pip install lm_eval)",
        ) from None
    import pretrainlab.eval.lm_eval_model  # noqa: F401  (registers the `pretrainlab` model)

    argv = with_defaults(list(argv))
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # lm_eval's CLI reads sys.argv
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


def with_defaults(argv: list[str]) -> list[str]:
    """`--model pretrainlab`, `--batch_size auto`, `--device auto` unless given; `ls`/`validate`/help are left alone."""
    if not argv or argv[0] in ("ls", "validate", "-h", "--help") or "-h" in argv or "--help" in argv:
        return argv
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    extra = []
    if not given & {"--model", "-M"}:
        extra += ["--model", "pretrainlab"]
    if not given & {"--batch_size", "-b"}:
        extra += ["--batch_size", "auto"]
    if "--device" not in given:
        extra += ["--device", "auto"]
    if argv[0] == "run":
        return ["run", *extra, *argv[1:]]
    return [*extra, *argv]
