"""`pretrainlab export RUN --format hf OUT`: a run's checkpoint as a Hugging Face LlamaForCausalLM folder.

The folder loads with `AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)`
with no custom code (and so with lm-evaluation-harness `--model hf` and vLLM):

    config.json              LlamaForCausalLM config (see `hf_llama.llama_config`)
    generation_config.json   bos / eos / pad ids
    model.safetensors        the weights under Hugging Face names (see `hf_llama.to_hf_state`)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (see `hf_tokenizer`)
    pretrainlab.json         where it came from: run, checkpoint, step, data fingerprint

The folder is written next to OUT under a temporary name and renamed into place, so OUT is either absent
(or as it was) or complete. A run whose model has no Llama equivalent is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from pretrainlab.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WEIGHTS_FILE = "model.safetensors"


def export_hf(
    run_dir: str | Path,
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
    data: str | Path | None = None,
) -> Path:
    """Export `checkpoint` of `run_dir` (default: the newest complete one) to `out_dir`; return `out_dir`.

    `dtype` is the dtype of the saved weights (`float32` exact, `bfloat16` half the size). An existing
    non-empty `out_dir` is refused unless `overwrite`. The tokenizer comes from the run's prepared folder,
    or from `data` (a prepared folder with the same tokenizer) when that one has moved.
    """
    from safetensors.torch import save as safetensors_save

    from pretrainlab.data.tokenizer import TOKENIZER_FILE
    from pretrainlab.eval.hf_llama import llama_config, require_llama, to_hf_state
    from pretrainlab.eval.hf_tokenizer import write_tokenizer_files
    from pretrainlab.eval.load import load_run
    from pretrainlab.train.run_folder import load_run_config

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not supported", hint=f"choose one of {', '.join(DTYPES)}")
    run_dir, out = Path(run_dir), Path(out_dir)
    _check_out(out, overwrite)
    if (run_dir / "config.yaml").is_file():  # refuse a non-Llama model before loading anything
        require_llama(load_run_config(run_dir).model, f"run {run_dir} (model section of its config.yaml)")
    model, _, prepared, ckpt = load_run(run_dir, checkpoint, data=data, device="cpu")
    model_cfg = model.cfg  # resolved: every size filled
    require_llama(model_cfg, f"run {run_dir}")
    tensors = {k: v.to(DTYPES[dtype]) for k, v in to_hf_state(model.state_dict(), model_cfg).items()}
    tokenizer = prepared.tokenizer
    token_file = prepared.path / TOKENIZER_FILE if tokenizer.kind != "bytes" else None

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ids = write_tokenizer_files(tmp, tokenizer, token_file, max_len=int(model_cfg.max_seq_len or 0))
        config = llama_config(model_cfg, dtype=dtype, bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"])
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", {  # padding is never generated, as in pretrainlab
            "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
            "suppress_tokens": [ids["pad"]],
        })
        (tmp / WEIGHTS_FILE).write_bytes(safetensors_save(tensors, metadata={"format": "pt"}))
        _write_json(tmp / "pretrainlab.json", _provenance(run_dir, ckpt, prepared, tokenizer.kind, dtype))
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_from_cli(run: str, out: str, *, fmt: str, checkpoint: str | None, dtype: str, overwrite: bool,
                    data: str | None = None) -> int:
    """The `export` subcommand: export, then say how to load the folder."""
    if fmt != "hf":
        raise ConfigError(f"--format {fmt!r} is not supported", hint="use --format hf")
    path = export_hf(run, out, checkpoint, dtype=dtype, overwrite=overwrite, data=data)
    print(f"wrote {path} (LlamaForCausalLM, {dtype})")
    print("load it with: AutoModelForCausalLM.from_pretrained(...) and AutoTokenizer.from_pretrained(...) "
          f"from transformers on {str(path)!r}")
    return 0


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} exists and is not a folder", hint="choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"output folder {str(out)!r} already exists and is not empty",
            hint="choose another output folder, or pass --overwrite to replace it",
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an existing `out` is moved aside first and deleted after."""
    aside = None
    if out.exists():
        aside = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(out, aside)
    try:
        os.replace(tmp, out)
    except OSError:
        if aside is not None:
            os.replace(aside, out)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _provenance(run_dir: Path, ckpt: Path, prepared: Any, kind: str, dtype: str) -> dict[str, Any]:
    from pretrainlab.train.checkpoint import checkpoint_step

    try:
        step: int | None = checkpoint_step(ckpt)
    except Exception:  # a --checkpoint folder under another name
        step = None
    return {
        "format": "pretrainlab-hf-export/1",
        "run": str(run_dir.resolve()),
        "checkpoint": str(ckpt.resolve()),
        "step": step,
        "data_fingerprint": prepared.fingerprint,
        "tokenizer_kind": kind,
        "dtype": dtype,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
