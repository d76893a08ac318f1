"""Read a Hugging Face Llama folder (config.json + safetensors, one file or sharded) into pretrainlab.

`read_hf_llama(folder)` gives the resolved ModelConfig and the float32 state dict that pretrainlab's
Decoder loads, `iter_hf_llama` the same tensors one at a time; `RunConfig.init_from` uses the latter for
continued pretraining (see `train/init_from.py`).
Nothing here needs transformers: config.json is JSON and the weights are read with safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from pretrainlab.config import ModelConfig
from pretrainlab.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"


def is_hf_folder(path: str | Path) -> bool:
    """True when `path` is a folder with a Hugging Face config.json."""
    return (Path(path) / CONFIG_FILE).is_file()


def read_hf_config(folder: str | Path) -> ModelConfig:
    """The pretrainlab ModelConfig of a Llama config.json (refusing what pretrainlab cannot reproduce)."""
    from pretrainlab.eval.hf_llama import model_config_from_llama

    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {str(folder)!r} is not a Hugging Face model folder",
                          hint="point at a folder holding config.json and *.safetensors")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"{path}: the top level is not a JSON object")
    return model_config_from_llama(hf, str(path))


def read_hf_llama(folder: str | Path) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(resolved ModelConfig, pretrainlab state dict in float32) of a Llama folder.

    The weights are `model.safetensors`, or the shards named by `model.safetensors.index.json`; tensors
    a Llama checkpoint may carry beyond the model (`rotary_emb.inv_freq`, a tied `lm_head.weight`) are ignored.
    Loading into a model? `iter_hf_llama` gives the tensors one at a time instead.
    """
    cfg, tensors = iter_hf_llama(folder)
    return cfg, dict(tensors)


def iter_hf_llama(folder: str | Path) -> tuple[ModelConfig, Iterator[tuple[str, Tensor]]]:
    """(resolved ModelConfig, an iterator of (pretrainlab name, float32 tensor)) of a Llama folder: each
    tensor is read from its safetensors file when the iterator reaches it, so copying them one by one into
    a model holds at most one extra layer in memory."""
    from safetensors import safe_open

    from pretrainlab.eval.hf_llama import iter_hf_state

    folder = Path(folder)
    cfg = read_hf_config(folder)
    files = _weight_files(folder)
    source = str(folder)
    handles: dict[Path, Any] = {}

    def get(name: str) -> Tensor:
        path = files.get(name)
        if path is None:
            raise CheckpointError(f"{source}: the weights have no tensor {name!r}",
                                  hint="the safetensors files do not match config.json (or are incomplete)")
        if path not in handles:
            try:
                handles[path] = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types
                raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        return handles[path].get_tensor(name)

    return cfg, iter_hf_state(get, cfg, source)


def _weight_files(folder: Path) -> dict[str, Path]:
    """tensor name -> the safetensors file holding it."""
    from safetensors import safe_open

    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        out = {name: folder / file for name, file in weight_map.items()}
        missing = sorted({p.name for p in out.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{folder}: shard(s) {', '.join(missing)} named in {INDEX_FILE} are missing",
                                  hint="download or copy every shard")
        return out
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
        raise CheckpointError(
            f"{folder} has no *.safetensors weights" + (f" (found {', '.join(other)})" if other else ""),
            hint="convert the checkpoint to safetensors (transformers: model.save_pretrained(folder)); "
            "pickled .bin weights are not loaded, they could run code",
        )
    out: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                names = list(h.keys())
        except Exception as e:
            raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
        for name in names:
            if name in out:
                raise CheckpointError(
                    f"{folder}: tensor {name!r} is in both {out[name].name} and {f.name}, and there is no "
                    f"{INDEX_FILE} to say which one counts",
                    hint="remove the stray .safetensors file (e.g. an older copy), or add the index that "
                    "save_pretrained writes",
                )
            out[name] = f
    return out
