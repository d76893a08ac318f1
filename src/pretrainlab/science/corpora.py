"""Where replications and benchmarks find real text: the shared local corpora (`../shared/data/corpora`).

`PRETRAINLAB_CORPORA` names the folder when set; otherwise `shared/data/corpora` beside the checkout (found from
this file in an editable install, then from the current folder). Nothing here downloads: a protocol checks the
files it needs and falls back to built-in data when they are absent (a user's clone has no `../shared`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PRETRAINLAB_CORPORA"
_RELATIVE = Path("shared") / "data" / "corpora"


def corpora_dir() -> Path:
    """The corpora folder: $PRETRAINLAB_CORPORA, else the first `../shared/data/corpora` that exists (beside the
    source checkout, then beside the current folder), else the first of those (absent: callers fall back)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidates = [Path(__file__).resolve().parents[3].parent / _RELATIVE, Path.cwd().resolve().parent / _RELATIVE]
    return next((c for c in candidates if c.is_dir()), candidates[0])


CORPORA: Path = corpora_dir()
