"""`pretrainlab replicate NAME`: run a registered replication and print its claims table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pretrainlab.errors import ConfigError
from pretrainlab.science.replication import (
    REPLICATIONS,
    ReplicationContext,
    load_builtin_replications,
    print_claims,
    write_replication,
)


def replicate_from_cli(args: argparse.Namespace) -> int:
    load_builtin_replications()
    if args.name == "list":
        for name in REPLICATIONS.names():
            rep = REPLICATIONS.get(name)
            print(f"{name:24s} {rep.paper}\n{'':24s} {rep.summary}")
        return 0
    rep = REPLICATIONS.get(args.name, field="replicate NAME")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: needs at least 1 seed")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: needs at least 1 job")
    out = Path(args.out) if args.out else Path("replications") / f"{rep.name}-{args.scale}"
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReplicationContext(
        out=out,
        scale=args.scale,
        seeds=args.seeds or rep.default_seeds,
        jobs=args.jobs or 2,
        data=Path(args.data) if args.data else None,
    )
    start = time.perf_counter()
    try:
        result = rep.run(ctx)
    finally:
        sessions = _record_session(out, time.perf_counter() - start)
    result.wall_s = sum(sessions)
    result.details["sessions_s"] = [round(s, 1) for s in sessions]
    path = write_replication(out, result)
    print_claims(result)
    from pretrainlab.science.report import write_report

    written = write_report(out)
    if len(sessions) > 1:
        print(f"wall time {result.wall_s / 60:.1f} min over {len(sessions)} sessions (resumed)")
    print(f"report: {written['html']}")
    print(f"replication: {path}")
    return 0


SESSIONS_FILE = ".sessions.json"


def _record_session(out: Path, seconds: float) -> list[float]:
    """Add this session's wall time to the folder's record (also when it failed or was stopped) and return
    every session's, so a resumed replication reports its whole wall time."""
    path = out / SESSIONS_FILE
    try:
        sessions = [float(s) for s in json.loads(path.read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        sessions = []
    sessions.append(seconds)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sessions))
    tmp.replace(path)
    return sessions
