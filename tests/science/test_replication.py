"""The replication framework: replication.json in the shared format, the claims table, the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrainlab.cli import main
from pretrainlab.science.replication import (
    REPLICATIONS,
    Claim,
    ReplicationResult,
    load_builtin_replications,
    mean_sd,
    print_claims,
    spread_text,
    write_replication,
)


def _result() -> ReplicationResult:
    return ReplicationResult(
        name="demo", paper="A paper, arXiv 0000.00000", scale="tiny", seeds=3, wall_s=12.34,
        claims=[Claim("x beats y by >= 0.03", "0.3", "0.05", "±0.01 sd over 3 seeds", True),
                Claim("z is monotone", "yes", "fit failed: too few points", "-", None)],
    )


def test_replication_json_has_the_shared_format(tmp_path: Path) -> None:
    path = write_replication(tmp_path, _result())
    data = json.loads(path.read_text())
    assert {"name", "paper", "scale", "seeds", "wall_s", "claims"} <= set(data)
    assert data["wall_s"] == 12.3
    assert data["claims"][0] == {"claim": "x beats y by >= 0.03", "paper_figure": "0.3", "our_figure": "0.05",
                                 "spread": "±0.01 sd over 3 seeds", "holds": True}
    assert data["claims"][1]["holds"] is None
    assert not list(tmp_path.glob("*.tmp"))


def test_claims_table_prints_every_claim_and_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    print_claims(_result())
    out = capsys.readouterr().out
    assert "x beats y" in out and "yes" in out and "n/a" in out


def test_spread_and_mean() -> None:
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_sd([5.0]) == (5.0, 0.0)
    assert "3 seeds" in spread_text([1.0, 2.0, 3.0])
    assert spread_text([1.0]) == "1 seed (no spread)"


def test_infinite_compute_is_registered() -> None:
    load_builtin_replications()
    assert "infinite-compute" in REPLICATIONS.names()
    assert main(["replicate", "list"]) == 0


def test_cli_rejects_unknown_names_and_bad_counts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["replicate", "infinite-compte", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'infinite-compute'" in capsys.readouterr().err
    assert main(["replicate", "infinite-compute", "--seeds", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--seeds 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_paired_gap_is_the_mean_of_seed_paired_differences() -> None:
    from pretrainlab.science.replication import paired_gap

    gap, diffs = paired_gap([2.0, 3.0, 4.5], [1.0, 3.5, 4.0])
    assert diffs == [1.0, -0.5, 0.5] and gap == pytest.approx(1.0 / 3)
