"""The run folder: `Path(cfg.out_dir) / cfg.name`, holding config.yaml, env.json, metrics.jsonl and
checkpoints/ (layout in /work/shared/design.md).

A new run refuses a folder that already holds a run unless `overwrite: true`; `--resume` reuses it.
config.yaml is the resolved config (every default written out), so `pretrainlab train
runs/<name>/config.yaml` reruns the run exactly; env.json records what produced it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import pretrainlab
from pretrainlab.config import RunConfig, dump_config, load_config
from pretrainlab.errors import ConfigError

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
# What a run writes; `overwrite` removes exactly these, never anything else a user put there.
RUN_OUTPUTS = (CONFIG_FILE, ENV_FILE, METRICS_FILE, "checkpoints", "samples.txt", "report.md", "report.html", "plots")


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def prepare_run_dir(cfg: RunConfig, *, resume: bool) -> Path:
    """Create (or, for a resume, reuse) the run folder; refuse to mix a new run into an old one."""
    run_dir = run_dir_of(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} exists and is not a folder", hint="change name or out_dir")
    if not resume and run_dir.is_dir():
        existing = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
        if existing:
            if not cfg.overwrite:
                raise ConfigError(
                    f"run folder {str(run_dir)!r} already holds a run ({', '.join(existing)})",
                    hint="pass --resume to continue it, overwrite=true to replace it, or choose another name=...",
                )
            for name in existing:
                target = run_dir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_config(run_dir: Path, cfg: RunConfig) -> Path:
    path = run_dir / CONFIG_FILE
    path.write_text(dump_config(cfg), encoding="utf-8")
    return path


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the git checkout holding this package (with `-dirty` when modified), or None."""
    where = start or Path(pretrainlab.__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, cwd=where, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "") if rev else None


def environment(device: torch.device, *, world_size: int = 1, precision: str | None = None) -> dict[str, Any]:
    """Versions, device, threads, git commit and host: what env.json records."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pretrainlab": pretrainlab.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "world_size": world_size,
        "precision": precision,
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "argv": sys.argv,
    }
    return env


def write_env(run_dir: Path, env: dict[str, Any]) -> Path:
    path = run_dir / ENV_FILE
    path.write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    return path


def load_run_config(run_dir: Path) -> RunConfig:
    """The resolved RunConfig saved in a run folder (for eval, generate, reports)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: {str(run_dir)!r} is not a run folder",
            hint="pass the folder a `pretrainlab train` run wrote (out_dir/name)",
        )
    return load_config(RunConfig, path)
