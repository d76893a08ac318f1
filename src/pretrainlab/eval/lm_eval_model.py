"""The `pretrainlab` model of lm-evaluation-harness: score lm_eval's requests with the native model.

Importing this module registers the class under the name `pretrainlab`, so that

    import pretrainlab.eval.lm_eval_model
    lm_eval.simple_evaluate(model="pretrainlab", model_args="run=runs/run", tasks=[...])

works, and `pretrainlab lm-eval --model_args run=runs/run --tasks ...` (eval/lm_eval_cli.py) runs lm_eval's
own command line with it. No export is needed, so every recipe can be evaluated, including ones with no
Hugging Face equivalent.

Requests map onto the likelihood engine (eval/likelihood.py):

- `loglikelihood`: text is tokenised as lm_eval's `hf` model does (`TemplateLM`): trailing spaces of the
  context move to the front of the continuation, `context + continuation` is encoded whole and split after
  as many tokens as the context alone encodes to; an empty context becomes the end-of-text id, which every
  training document follows. All requests go to `score_continuations` at once, so the choices of a
  multiple-choice question share one forward of their context.
- `loglikelihood_rolling`: lm_eval's rolling windows (`get_rolling_token_windows`, one-token context,
  disjoint predictions of `max_seq_len` tokens; the last, partial window keeps a full window of context),
  all windows of all documents scored in one `score_continuations` call. For a text that fills a whole
  number of windows this equals `score_rolling`; the last partial window differs (score_rolling conditions
  it on its own tokens only), and lm_eval's rule is the one `--model hf` follows.
- `generate_until`: greedy decoding with the KV cache of eval/generate.py, stopped at end-of-text, at
  `max_gen_toks` tokens or at the first `until` string (cut from the text returned). Past the model's
  window every step conditions on the last `max_seq_len` tokens.

Precision: by default the run's evaluation precision, the one `pretrainlab eval` uses (bf16 autocast on
CUDA unless the run trained in fp32, fp32 on the CPU); `dtype=` overrides it. Each request type shows a
progress bar unless lm_eval passes `disable_tqdm`. The model runs in one process: under `accelerate launch`
or `torchrun` with several processes it refuses to start (every process would score every request).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from pretrainlab.errors import CheckpointError, ConfigError
from pretrainlab.train.precision import autocast

_AUTOCAST = {"float32": None, "fp32": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
DEFAULT_MAX_GEN_TOKS = 256  # lm_eval's `hf` default
REQUESTS_PER_CALL = 2048  # requests per engine call: batches well, and the progress bar moves


@register_model("pretrainlab")
class PretrainlabLM(TemplateLM):
    """A pretrainlab run folder as an lm_eval model.

    Model args: `run` (run folder, required; `pretrained` is an alias, as with `--model hf`, and lm_eval names
    its --output_path subfolder after it), `checkpoint` (a checkpoint folder or its name under
    <run>/checkpoints, e.g. step-200; default the newest complete one), `data` (the run's prepared folder
    when it has moved, or another prepared with the same tokenizer), `device` (auto, cpu, cuda, cuda:1),
    `batch_size` (rows per forward for requests that share no context, at the full window length; `auto`
    or unset: the engine's 16,384-token budget), `dtype` (auto, the default: the run's evaluation precision
    as `pretrainlab eval` uses it; float32, bfloat16 or float16 to choose), `max_gen_toks` (default for
    generation requests that set none, 256).
    """

    backend = "causal"

    def __init__(
        self,
        run: str | Path | None = None,
        checkpoint: str | Path | None = None,
        data: str | Path | None = None,
        device: str | None = None,
        batch_size: int | str | None = None,
        dtype: str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        max_batch_size: int | None = None,  # passed by lm_eval's CLI; the engine sizes batches itself
        pretrained: str | Path | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        from pretrainlab.eval.entry import eval_autocast_dtype
        from pretrainlab.eval.load import load_run
        from pretrainlab.train.distributed import resolve_device, unwrap_model

        _refuse_several_processes()
        if unused:
            raise ConfigError(
                f"lm_eval model args not known to the pretrainlab model: {', '.join(sorted(unused))}",
                hint="use run= (or pretrained=), checkpoint=, data=, device=, batch_size=, dtype=, max_gen_toks=",
            )
        if run and pretrained and Path(run) != Path(pretrained):
            raise ConfigError(
                f"run={run} and pretrained={pretrained} name two models", hint="pass one of them (the same thing)"
            )
        run = run or pretrained
        if not run:
            raise ConfigError(
                "the pretrainlab lm_eval model needs run=<run folder>",
                hint="e.g. --model_args run=runs/run (the folder `pretrainlab train` wrote)",
            )
        dev = resolve_device(device or "auto")
        model, cfg, prepared, ckpt = load_run(run, _checkpoint_folder(Path(run), checkpoint),
                                              data=data or None, device=dev)
        self.model = model
        self.run_config = cfg
        self.checkpoint = ckpt
        self.tokenizer = prepared.tokenizer
        self._device = dev
        self._eot = int(prepared.eot_id)
        self._pad = int(prepared.pad_id)
        self.max_length = int(unwrap_model(model).cfg.max_seq_len)  # type: ignore[union-attr]
        self.max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks")
        self._autocast = eval_autocast_dtype(cfg, dev) if _is_auto(dtype) else _autocast_dtype(dtype)
        self._batch_size = batch_size
        self._batch_tokens = _batch_tokens(batch_size, self.max_length)
        self._run_name = str(Path(run))

    # -- what TemplateLM needs ---------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def tokenizer_name(self) -> str:
        return f"pretrainlab:{self._run_name}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids of `string`; the run's tokenizer adds no special tokens (documents follow an end-of-text)."""
        return list(self.tokenizer.encode(string))

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        for args, _, cont in requests:
            if not cont:
                context, continuation = args or ("", "")
                raise ValueError(
                    f"the continuation {continuation!r} of context {context[-40:]!r} encodes to no tokens after the "
                    "context (it is empty, or the tokenizer merged it into the context); there is nothing to score"
                )
        scores = self._score(requests, disable_tqdm)
        out = []
        for (args, _, _), s in zip(requests, scores):
            answer = (s.logprob, s.greedy)
            if args is not None:
                self.cache_hook.add_partial("loglikelihood", args, answer)
            out.append(answer)
        return out

    def _score(self, requests: Sequence[tuple[Any, list[int], list[int]]], disable_tqdm: bool) -> list[Any]:
        """The engine's scores of `requests`, in order, in calls of about REQUESTS_PER_CALL requests (those with
        one context always in one call, so they share its forward) to move a progress bar."""
        from pretrainlab.eval.likelihood import score_continuations

        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (_, ctx, _) in enumerate(requests):
            by_context.setdefault(tuple(ctx), []).append(i)
        calls: list[list[int]] = [[]]
        for members in by_context.values():
            if calls[-1] and len(calls[-1]) + len(members) > REQUESTS_PER_CALL:
                calls.append([])
            calls[-1].extend(members)
        scores: list[Any] = [None] * len(requests)
        with tqdm(total=len(requests), desc="pretrainlab loglikelihood", disable=disable_tqdm) as bar:
            for call in calls:
                if not call:
                    continue
                got = score_continuations(
                    self.model,
                    [(requests[i][1], requests[i][2]) for i in call],
                    device=self._device,
                    autocast_dtype=self._autocast,
                    bos_id=self.prefix_token_id,
                    batch_tokens=self._batch_tokens,
                )
                for i, score in zip(call, got):
                    scores[i] = score
                bar.update(len(call))
        return scores

    # -- the other two request types ----------------------------------------------------------------------

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Summed log-probability of each whole text, in lm_eval's rolling windows (see the module docstring)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows: list[tuple[None, list[int], list[int]]] = []
        owner: list[int] = []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        if windows:
            scored = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)  # type: ignore[arg-type]
            for i, (logprob, _) in zip(owner, scored):
                totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context, cut at the first stop string (see the module docstring)."""
        out = []
        for req in tqdm(requests, desc="pretrainlab generate_until", disable=disable_tqdm):
            context, gen_kwargs = req.args
            until, max_tokens = self._generation_settings(gen_kwargs)
            text = self._greedy(context, until, max_tokens)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    # -- internals ----------------------------------------------------------------------------------------

    def _generation_settings(self, gen_kwargs: dict[str, Any]) -> tuple[list[str], int]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        max_tokens = self.max_gen_toks
        for key in ("max_gen_toks", "max_new_tokens", "max_tokens"):
            if key in kwargs:
                max_tokens = _positive_int(kwargs.pop(key), key)
        sampling = kwargs.pop("do_sample", None)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        if sampling or (sampling is None and temperature > 0):
            raise ConfigError(
                f"the pretrainlab lm_eval model decodes greedily; this task asks for sampling ({gen_kwargs})",
                hint="evaluate with do_sample=false (e.g. --gen_kwargs do_sample=False,temperature=0), "
                "or export the run and use --model hf",
            )
        return [s for s in until if s], max_tokens

    def _greedy(self, context: str, until: list[str], max_tokens: int) -> str:
        from pretrainlab.eval.generate import _CachedStep
        from pretrainlab.model.kv_cache import supports_kv_cache
        from pretrainlab.train.distributed import unwrap_model

        core = unwrap_model(self.model)
        ids = self.tok_encode(context) or [self.prefix_token_id]
        step = _CachedStep(core, None, self._device) if supports_kv_cache(core) else None
        new: list[int] = []
        text = ""
        with torch.no_grad(), autocast(self._device, self._autocast):
            for _ in range(max_tokens):
                if step is not None:
                    logits = step(ids)
                else:
                    x = torch.tensor([ids[-self.max_length :]], dtype=torch.long, device=self._device)
                    logits = core.logits(self.model(x))[0, -1].float()  # type: ignore[operator]
                if 0 <= self._pad < logits.numel():
                    logits[self._pad] = float("-inf")
                nxt = int(torch.argmax(logits))
                if nxt == self._eot:
                    break
                ids.append(nxt)
                new.append(nxt)
                text = self.tokenizer.decode(new)
                if any(s in text for s in until):
                    break
        for s in until:
            text = text.split(s)[0]
        return text


def _checkpoint_folder(run: Path, checkpoint: str | Path | None) -> Path | None:
    """A checkpoint folder as given, or its name under <run>/checkpoints (step-200, or just 200)."""
    if checkpoint is None or str(checkpoint) == "":
        return None
    given = Path(str(checkpoint))
    if given.is_dir():
        return given
    for name in (str(checkpoint), f"step-{checkpoint}"):
        if (run / "checkpoints" / name).is_dir():
            return run / "checkpoints" / name
    raise CheckpointError(
        f"checkpoint {str(checkpoint)!r} is neither a folder nor a checkpoint of {run}",
        hint=f"pass a folder, or a name under {run / 'checkpoints'} such as step-200; leave it out for the newest",
    )


def _is_auto(dtype: str | None) -> bool:
    return dtype is None or str(dtype) in ("", "auto")


def _autocast_dtype(dtype: str) -> torch.dtype | None:
    key = str(dtype).removeprefix("torch.")
    if key not in _AUTOCAST:
        raise ConfigError(
            f"dtype={dtype!r} is not one of auto, {', '.join(_AUTOCAST)}",
            hint="leave it out (auto: the run's evaluation precision), or e.g. dtype=float32 for exact scores",
        )
    return _AUTOCAST[key]


def _refuse_several_processes() -> None:
    """The model scores every request in one process; a launcher with several processes would repeat the work
    in each (lm_eval spreads requests over processes only for models that implement its rank API)."""
    world = os.environ.get("WORLD_SIZE", "1")
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    size = torch.distributed.get_world_size() if initialized else int(world) if world.isdigit() else 1
    if size > 1:
        raise ConfigError(
            f"the pretrainlab lm_eval model runs in one process, but this is one of {size} (accelerate launch or "
            "torchrun): every process would score every request",
            hint="run `pretrainlab lm-eval ...` without a launcher (one device), or export the run "
            "(`pretrainlab export RUN --format hf OUT`) and use --model hf, which lm_eval spreads over processes",
        )


def _batch_tokens(batch_size: int | str | None, window: int) -> int:
    from pretrainlab.eval.likelihood import BATCH_TOKENS

    if batch_size is None or str(batch_size).startswith("auto"):
        return BATCH_TOKENS
    return _positive_int(batch_size, "batch_size") * (window + 1)


def _positive_int(value: int | str, name: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer", hint=f"e.g. {name}=16")
    return n
