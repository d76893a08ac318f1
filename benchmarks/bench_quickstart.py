"""The real `pretrainlab quickstart`: validation bits-per-byte against gzip -9 on the same held-out files,
and the wall time of the whole command (prepare + probe + train + evaluate + sample), in a fresh process.

The command must finish within 5 minutes on a 2-core machine with its default 3-minute budget and its
model must beat gzip -9 (each held-out file compressed alone). On a shared machine the wall time and the
steps reached are pessimistic; the bpb figure follows the steps reached.

Usage: python benchmarks/bench_quickstart.py [--minutes 3] [--out DIR] [--keep] [overrides ...]
Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WALL_LIMIT_S = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--out", default=None, help="quickstart folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("overrides", nargs="*", help="dotted overrides passed to quickstart")
    args = parser.parse_args()

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-quickstart-")) / "qs"
    cmd = [sys.executable, "-m", "pretrainlab", "quickstart", "--out", str(out), "--minutes", str(args.minutes),
           *args.overrides]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    result: dict = {"exit_code": proc.returncode, "wall_s": round(wall, 1), "minutes": args.minutes,
                    "overrides": args.overrides, "load_avg_1m": os.getloadavg()[0]}
    summary = out / "quickstart.json"
    if proc.returncode == 0 and summary.is_file():
        r = json.loads(summary.read_text())
        result.update(
            val_bpb=round(r["val_bpb"], 4),
            gzip_per_document_bpb=round(r["gzip_per_document_bpb"], 4),
            gzip_concatenated_bpb=round(r["gzip_concatenated_bpb"], 4),
            beats_gzip=r["val_bpb"] < r["gzip_per_document_bpb"],
            steps=r["steps"],
            planned_steps=r["planned_steps"],
            tokens=r["tokens"],
            train_s=r["train_s"],
            val_documents=r["val_documents"],
            val_bytes=r["val_bytes"],
        )
    result["within_5_min"] = wall <= WALL_LIMIT_S
    if not args.out and not args.keep:
        shutil.rmtree(out.parent, ignore_errors=True)
    print("RESULT " + json.dumps(result))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
