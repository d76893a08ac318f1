"""`pretrainlab replicate NAME`: run a registered replication and print its claims table."""

from __future__ import annotations

import argparse
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
    result = rep.run(ctx)
    result.wall_s = time.perf_counter() - start
    path = write_replication(out, result)
    print_claims(result)
    try:
        from pretrainlab.science.report import write_report

        written = write_report(out)
        print(f"report: {written.get('html', out / 'report.html')}")
    except ImportError:  # reports are optional for a replication's verdict
        pass
    print(f"replication: {path}")
    return 0
