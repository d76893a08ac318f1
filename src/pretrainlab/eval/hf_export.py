"""`pretrainlab export RUN --format hf OUT`: a run's checkpoint as a Hugging Face LlamaForCausalLM folder.

The folder loads with `AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)`
with no custom code (and so with lm-evaluation-harness `--model hf` and vLLM):

    config.json              LlamaForCausalLM config (see `hf_llama.llama_config`)
    generation_config.json   bos / eos / pad ids
    model.safetensors        the weights under Hugging Face names (see `hf_llama.to_hf_state`)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (see `hf_tokenizer`)
    pretrainlab.json         where it came from: run, checkpoint, step, data fingerprint

The folder is written next to OUT under a temporary name, flushed to disk and renamed into place, so OUT is
either absent (or as it was) or complete; temporary folders of exports whose process died are removed by the
next export to the same OUT. A run whose model has no Llama equivalent is refused before anything is written.

`overwrite` replaces only an empty folder or an earlier export (one holding pretrainlab.json), never the run
folder, its checkpoint or its prepared data, nor a folder containing them.
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
MARKER_FILE = "pretrainlab.json"  # what marks a folder as an export (the only kind --overwrite replaces)
EXPORT_FORMAT = "pretrainlab-hf-export/1"


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
    non-empty `out_dir` is refused unless `overwrite` and it is an earlier export; an `out_dir` that is or
    contains the run folder, the checkpoint or the prepared-data folder is always refused. The tokenizer
    comes from the run's prepared folder, or from `data` (a prepared folder with the same tokenizer) when
    that one has moved. The weights are written straight to the file (no second copy in memory).
    """
    from safetensors.torch import save_file

    from pretrainlab.data.tokenizer import TOKENIZER_FILE
    from pretrainlab.eval.hf_llama import llama_config, require_llama, to_hf_state
    from pretrainlab.eval.hf_tokenizer import write_tokenizer_files
    from pretrainlab.eval.load import load_run
    from pretrainlab.io_atomic import fsync_dir, fsync_tree
    from pretrainlab.train.checkpoint import list_checkpoints
    from pretrainlab.train.run_folder import load_run_config

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not supported", hint=f"choose one of {', '.join(DTYPES)}")
    run_dir, out = Path(run_dir), Path(out_dir)
    # Before anything is loaded: OUT must not hold what the export reads (checked again once it is known)
    _refuse_inside(out, run_dir, "the run folder")
    for ckpt in [*list_checkpoints(run_dir), *([Path(checkpoint)] if checkpoint is not None else [])]:
        _refuse_inside(out, ckpt, "the checkpoint")
    if data is not None:
        _refuse_inside(out, Path(data), "the prepared-data folder")
    if (run_dir / "config.yaml").is_file():
        saved = load_run_config(run_dir)
        _refuse_inside(out, Path(saved.data.path), "the prepared-data folder")
        require_llama(saved.model, f"run {run_dir} (model section of its config.yaml)")  # before loading
    _check_out(out, overwrite)
    model, _, prepared, ckpt = load_run(run_dir, checkpoint, data=data, device="cpu")
    model_cfg = model.cfg  # resolved: every size filled
    require_llama(model_cfg, f"run {run_dir}")
    _refuse_inside(out, ckpt, "the checkpoint")
    _refuse_inside(out, Path(prepared.path), "the prepared-data folder")
    tensors = {k: v.to(DTYPES[dtype]) for k, v in to_hf_state(model.state_dict(), model_cfg).items()}
    del model  # the tensors share its storage (float32) or replace it (bfloat16)
    tokenizer = prepared.tokenizer
    token_file = prepared.path / TOKENIZER_FILE if tokenizer.kind != "bytes" else None

    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        ids = write_tokenizer_files(tmp, tokenizer, token_file, max_len=int(model_cfg.max_seq_len or 0))
        config = llama_config(model_cfg, dtype=dtype, bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"])
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", {  # padding is never generated, as in pretrainlab
            "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
            "suppress_tokens": [ids["pad"]],
        })
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        del tensors
        _write_json(tmp / MARKER_FILE, _provenance(run_dir, ckpt, prepared, tokenizer.kind, dtype))
        fsync_tree(tmp)  # the content is on disk before the rename makes it visible
        _move_into_place(tmp, out)
        fsync_dir(out.parent)
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
    """Refuse a file, a non-empty folder without `overwrite`, and a non-empty folder that is not an export."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} exists and is not a folder", hint="choose another output path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"output folder {str(out)!r} already exists and is not empty",
            hint="choose another output folder, or pass --overwrite to replace an earlier export",
        )
    if not is_export(out):
        raise ConfigError(
            f"output folder {str(out)!r} is not empty and was not written by `pretrainlab export` (it has no "
            f"{MARKER_FILE}); --overwrite only replaces an earlier export",
            hint="choose another output folder (or empty this one yourself)",
        )


def is_export(folder: Path) -> bool:
    """True when `folder` holds the marker file an export writes."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and str(marker.get("format", "")).startswith("pretrainlab-hf-export/")


def _refuse_inside(out: Path, path: Path, what: str) -> None:
    """ConfigError when `out` is `path` or a folder above it: replacing `out` would delete `path`."""
    o, p = out.resolve(), path.resolve()
    if o == p or o in p.parents:
        relation = "is" if o == p else "contains"
        raise ConfigError(
            f"output {str(out)!r} {relation} {what} {str(path)!r}; exporting there would overwrite it",
            hint="choose an output folder outside the run folder, its checkpoints and its prepared data",
        )


def _sweep_stale(out: Path) -> None:
    """Remove `.<name>.tmp-<pid>` folders of exports to `out` whose process is gone; a `.<name>.old-<pid>`
    one (a crash between moving the old export aside and renaming the new one in) is put back when `out`
    is missing, else removed."""
    for kind in ("tmp", "old"):
        for p in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            pid = p.name.rsplit("-", 1)[1]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)) or not p.is_dir():
                continue
            if kind == "old" and not out.exists() and is_export(p):
                os.replace(p, out)
            else:
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (on Windows: assumed, os.kill cannot ask there)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user
        return True
    return True


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
        "format": EXPORT_FORMAT,
        "run": str(run_dir.resolve()),
        "checkpoint": str(ckpt.resolve()),
        "step": step,
        "data_fingerprint": prepared.fingerprint,
        "tokenizer_kind": kind,
        "dtype": dtype,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
