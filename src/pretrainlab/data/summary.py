"""What `prepare` shows: a progress bar over the bytes read, then a table per domain and the warnings."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table


def make_progress(enabled: bool) -> Progress:
    """A byte-count progress bar on stderr; disabled when not wanted or stderr is not a terminal."""
    console = Console(file=sys.stderr)
    return Progress(
        TextColumn("[bold]prepare[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


def summary_table(manifest: dict[str, Any]) -> Table:
    """Documents, tokens, bytes, bytes per token, skipped and seconds per domain and split."""
    table = Table(title=f"prepared: {manifest['dtype']} tokens, vocab {manifest['tokenizer']['vocab_size']}")
    for name in ("domain", "split", "documents", "tokens", "bytes", "bytes/token", "skipped", "seconds"):
        table.add_column(name, justify="left" if name in ("domain", "split") else "right")
    for domain, entry in manifest["domains"].items():
        skipped = entry["skipped_empty"] + entry["bad_lines"]
        seconds = manifest.get("timing", {}).get(domain, 0.0)
        for split in ("train", "val"):
            s = entry[split]
            bpt = f"{s['bytes'] / s['tokens']:.2f}" if s["tokens"] else "-"
            table.add_row(
                domain if split == "train" else "",
                split,
                f"{s['documents']:,}",
                f"{s['tokens']:,}",
                f"{s['bytes']:,}",
                bpt,
                f"{skipped:,}" if split == "train" else "",
                f"{seconds:.1f}" if split == "train" else "",
            )
    return table


def print_summary(manifest: dict[str, Any], warnings: list[str], output: str) -> None:
    """The table on stdout, the warnings on stderr (plain lines, so they are never re-wrapped)."""
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console.width = 120  # logs and pipes: do not squeeze the table to 80 columns
    console.print(summary_table(manifest))
    print(f"wrote {output} (fingerprint {manifest['fingerprint'][:16]})", file=sys.stdout)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
