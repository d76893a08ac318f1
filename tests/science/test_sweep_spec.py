"""The sweep file: axes expand to the right points in the right order, names are stable and safe, and
every bad input fails before anything runs, naming the axis (no subprocess runs here)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import tiny_run_config  # noqa: E402

from pretrainlab.errors import ConfigError, DataError  # noqa: E402
from pretrainlab.science.sweep_spec import (  # noqa: E402
    MAX_NAME_LEN,
    apply_sweep_overrides,
    point_name,
    resolve_sweep,
)


def make_spec(tmp_path: Path, data: Path, axes: list[Any], **extra: Any) -> dict[str, Any]:
    base = tiny_run_config(tmp_path / "unused", data, train={"steps": 5}).model_dump(mode="json")
    return {"name": "s", "out_dir": str(tmp_path / "sweeps"), "base": base, "axes": axes, **extra}


def test_grid_is_a_cartesian_product_first_key_outermost_seeds_innermost(tmp_path: Path, tiny_prepared: Path) -> None:
    axes = [{"grid": {"optim.weight_decay": [0.1, 0.4, 1.6], "model.d_model": [32, 64]}}]
    sweep = resolve_sweep(make_spec(tmp_path, tiny_prepared, axes, seeds=2))
    got = [(p.config.optim.weight_decay, p.config.model.d_model, p.seed) for p in sweep.points]
    assert got == [(wd, d, s) for wd in (0.1, 0.4, 1.6) for d in (32, 64) for s in (0, 1)]
    assert sweep.points[0].axes == {"optim.weight_decay": 0.1, "model.d_model": 32}
    assert all(p.config.out_dir == str(sweep.folder / "runs") and p.config.name == p.name for p in sweep.points)
    assert sweep.folder == tmp_path / "sweeps" / "s"


def test_axes_combine_first_axis_outermost_and_list_values_go_together(tmp_path: Path, tiny_prepared: Path) -> None:
    axes = [
        {"grid": {"optim.weight_decay": [0.1, 0.4]}},
        {"list": [{"optim.lr": 1e-3, "train.steps": 4}, {"optim.lr": 3e-3}]},
    ]
    sweep = resolve_sweep(make_spec(tmp_path, tiny_prepared, axes))
    got = [(p.config.optim.weight_decay, p.config.optim.lr, p.config.train.steps) for p in sweep.points]
    assert got == [(0.1, 1e-3, 4), (0.1, 3e-3, 5), (0.4, 1e-3, 4), (0.4, 3e-3, 5)]
    # Every swept key is reported with the value the point runs with (the base's where unset).
    assert sweep.points[1].axes == {"optim.weight_decay": 0.1, "optim.lr": 3e-3, "train.steps": 5}
    assert sweep.points[1].origin == "axes[0].grid, axes[1].list[1]"
    assert sweep.points[0].overrides == {"optim.weight_decay": 0.1, "optim.lr": 1e-3, "train.steps": 4, "seed": 0}


def test_random_axis_is_deterministic_per_seed_and_within_bounds(tmp_path: Path, tiny_prepared: Path) -> None:
    params = {
        "optim.lr": {"log_uniform": [1e-4, 1e-2]},
        "model.d_model": {"choice": [32, 64]},
        "optim.weight_decay": {"uniform": [0.0, 1.0]},
        "train.steps": {"int_uniform": [3, 6]},
    }

    def draws(seed: int) -> list[tuple[Any, ...]]:
        axes = [{"random": {"count": 6, "seed": seed, "params": params}}]
        sweep = resolve_sweep(make_spec(tmp_path, tiny_prepared, axes))
        return [(p.config.optim.lr, p.config.model.d_model, p.config.optim.weight_decay, p.config.train.steps)
                for p in sweep.points]

    first = draws(0)
    assert len(first) == 6 and first == draws(0) and first != draws(1)
    for lr, d, wd, steps in first:
        assert 1e-4 <= lr <= 1e-2 and d in (32, 64) and 0.0 <= wd <= 1.0 and steps in range(3, 7)
        assert float(f"{lr:.4g}") == lr  # rounded to 4 significant digits (readable names and configs)
    # log-uniform: the draws spread over the decades, not bunched near the top
    assert min(math.log10(x[0]) for x in first) < -2.5


def test_seeds_count_from_the_base_seed_or_are_listed(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [], seeds=3)
    spec["base"]["seed"] = 7
    assert [p.seed for p in resolve_sweep(spec).points] == [7, 8, 9]
    spec["seeds"] = [0, 5]
    sweep = resolve_sweep(spec)
    assert [(p.name, p.config.seed) for p in sweep.points] == [("base_s0", 0), ("base_s5", 5)]


def test_point_names_are_stable_safe_unique_and_short() -> None:
    assert point_name({"optim.lr": 0.001, "model.preset": "tiny", "optim.weight_decay": 1.0}, 3) == (
        "lr-0.001_preset-tiny_weight_decay-1.0_s3")  # exact: no hash
    name = point_name({"optim.lr": 0.001, "model.preset": "tiny", "data.path": "a/b c"}, 3)
    assert re.fullmatch(r"lr-0\.001_preset-tiny_path-a_b_c_s3-[0-9a-f]{10}", name)  # '/' and ' ' replaced: hashed
    assert name == point_name({"optim.lr": 0.001, "model.preset": "tiny", "data.path": "a/b c"}, 3)
    assert re.fullmatch(r"weights-code3\+web0\.5_teacher-r_a\+r_b_s0-[0-9a-f]{10}",
                        point_name({"data.weights": {"code": 3, "web": 0.5}, "teacher": ["r/a", "r/b"]}, 0))
    long_a = point_name({f"k.key{i}": "x" * 20 for i in range(8)}, 0)
    long_b = point_name({f"k.key{i}": "x" * 20 if i else "y" * 20 for i in range(8)}, 0)
    assert len(long_a) <= MAX_NAME_LEN and len(long_b) <= MAX_NAME_LEN and long_a != long_b
    assert long_a.startswith("key0-xxx") and "_s0-" in long_a
    # Texts that read as another value get the hash: 1 (int), 1.0 (float), "1.0" and "true" (text) differ.
    names = {point_name({"k.v": v}, 0) for v in (1, 1.0, "1.0", True, "true", "tiny_moe", "tiny")}
    assert len(names) == 7 and "v-1_s0" in names and "v-1.0_s0" in names and "v-true_s0" in names
    assert "v-tiny_s0" in names and not any(n.startswith("v-tiny_moe_s0") and len(n) == len("v-tiny_moe_s0")
                                            for n in names)
    assert all(len(point_name({"k.v": v}, 0)) <= MAX_NAME_LEN for v in ("a/" * 80, ["x"] * 60))


def test_names_that_collide_get_a_hash(tmp_path: Path, tiny_prepared: Path) -> None:
    # '/' and '_' both become '_' in a file name: different values, one readable name.
    axes = [{"list": [{"data.path": "p/q"}, {"data.path": "p_q"}]}]
    spec = make_spec(tmp_path, tiny_prepared, axes)
    names = [p.name for p in resolve_sweep(spec, check_data=False).points]
    assert len(set(names)) == 2 and all(n.startswith("path-p_q_s0-") for n in names)
    # A point's name depends on its own values only: alone in its sweep it keeps the same name.
    alone = make_spec(tmp_path, tiny_prepared, [{"list": [{"data.path": "p/q"}]}])
    assert [p.name for p in resolve_sweep(alone, check_data=False).points] == names[:1]


def test_a_list_axis_entry_can_be_overridden_from_the_command_line(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [{"list": [{"optim.lr": 1e-3, "train.steps": 4}, {"optim.lr": 2e-3}]}])
    tree = apply_sweep_overrides(spec, ["axes.0.list.1.optim.lr=3e-3"])
    assert tree["axes"][0]["list"] == [{"optim.lr": 1e-3, "train.steps": 4}, {"optim.lr": 3e-3}]
    sweep = resolve_sweep(spec, ["axes.0.list.0.optim.lr=5e-4"])
    assert [(p.config.optim.lr, p.config.train.steps) for p in sweep.points] == [(5e-4, 4), (2e-3, 5)]
    with pytest.raises(ConfigError, match="index 2 is out of range"):
        resolve_sweep(spec, ["axes.0.list.2.optim.lr=1e-3"])


def test_missing_teacher_runs_are_named_before_anything_runs(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3, 2e-3]}}])
    spec["base"]["teacher"] = {"runs": [str(tmp_path / "teachers" / "big")]}
    with pytest.raises(ConfigError, match=r"point 'lr-0.001_s0' \(axes\[0\]\.grid\): teacher run '.*big' does not "
                                          r"exist") as info:
        resolve_sweep(spec)
    assert "train the teacher first" in str(info.value) and not (tmp_path / "sweeps").exists()
    (tmp_path / "teachers" / "big").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is not a run folder"):
        resolve_sweep(spec)
    (tmp_path / "teachers" / "big" / "config.yaml").write_text("name: big\n")
    assert len(resolve_sweep(spec).points) == 2
    assert len(resolve_sweep({**spec, "base": {**spec["base"], "teacher": {"runs": ["gone"]}}},
                             check_data=False).points) == 2  # shipped examples are checked without files


def test_overrides_apply_to_every_point_and_cli_items_keep_dotted_keys(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3]}}], overrides={"train.steps": 3})
    tree = apply_sweep_overrides(spec, ["overrides.train.log_every=2", "axes.0.grid.optim.lr=[0.002, 0.004]", "jobs=2"])
    assert tree["overrides"] == {"train.steps": 3, "train.log_every": 2}
    assert tree["axes"][0]["grid"] == {"optim.lr": [0.002, 0.004]} and tree["jobs"] == 2
    sweep = resolve_sweep(spec, ["overrides.train.log_every=2", "axes.0.grid.optim.lr=[0.002, 0.004]"])
    assert [(p.config.optim.lr, p.config.train.steps, p.config.train.log_every) for p in sweep.points] == [
        (0.002, 3, 2), (0.004, 3, 2)]


def test_base_path_is_relative_to_the_sweep_file(tmp_path: Path, tiny_prepared: Path) -> None:
    import yaml

    (tmp_path / "conf").mkdir()
    base = tiny_run_config(tmp_path / "x", tiny_prepared, train={"steps": 5}).model_dump(mode="json")
    (tmp_path / "conf" / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "conf" / "sweep.yaml").write_text(yaml.safe_dump(
        {"name": "rel", "out_dir": str(tmp_path / "sweeps"), "base": "base.yaml", "axes": [{"grid": {"optim.lr": [1e-3]}}]}))
    sweep = resolve_sweep(tmp_path / "conf" / "sweep.yaml")
    assert [p.name for p in sweep.points] == ["lr-0.001_s0"]


BAD_CASES = [
    ([{"grid": {"optim.wieght_decay": [0.1]}}], {},
     "axes[0].grid: unknown key 'optim.wieght_decay'; did you mean 'optim.weight_decay'?"),
    ([{"grid": {}}], {}, "axes[0].grid is empty"),
    ([{"grid": {"optim.lr": [1e-3]}}, {"grid": {"optim.weight_decay": []}}], {},
     "axes[1].grid: optim.weight_decay has an empty list of values"),
    ([{"list": []}], {}, "axes[0].list is empty"),
    ([{"grid": {"optim.lr": [1e-3]}}, {"list": [{"optim.lr": 2e-3}]}], {}, "axes[0] and axes[1] both set 'optim.lr'"),
    ([{"grid": {"train.steps": [4]}}, {"list": [{"optim.lr": -1}]}], {}, "axes[1].list[0]: optim.lr: Input should be greater than 0"),
    ([{"random": {"count": 2, "params": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}}], {},
     "axes[0].random.params.optim.lr: unknown distribution 'loguniform'; did you mean 'log_uniform'?"),
    ([{"random": {"count": 2, "params": {"optim.lr": {"log_uniform": [0, 1e-2]}}}}], {}, "log_uniform needs low > 0"),
    ([{"list": [{"optim.lr": 1e-3}, {"optim.lr": 1e-3}]}], {},
     "axes[0].list[0] and axes[0].list[1] give the same point 'lr-0.001_s0'"),
    ([{"gird": {"optim.lr": [1e-3]}}], {}, "axes[0]: unknown axis kind 'gird'; did you mean 'grid'?"),
    ([{"grid": {"seed": [1, 2]}}], {}, "axes[0].grid: 'seed' cannot be swept"),
    ([{"list": [{"optim": {"lr": 1e-3}}]}], {}, "axes[0].list[0]: 'optim' is a whole config section"),
    ([{"grid": {"optim.lr": 1e-3}}], {}, "axes[0]: grid.optim.lr: Input should be a valid list"),
    ([{"grid": {"model.preset": ["tiny", "tinyy"]}}], {},
     "point 'preset-tinyy_s0' (axes[0].grid): model.preset='tinyy' is not a known preset; did you mean 'tiny'?"),
    ([{"grid": {"optim.lr": [1e-3]}}], {"axis": []}, "unknown key 'axis'; did you mean 'axes'?"),
    ([], {"seeds": 0}, "seeds: Value error, seeds is a count >= 1"),
    ([], {"overrides": {"train.steps": 0}}, "base + overrides: train.steps: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize("axes, extra, message", BAD_CASES, ids=[m[:40] for _, _, m in BAD_CASES])
def test_bad_sweeps_fail_naming_the_axis_and_write_nothing(
    tmp_path: Path, tiny_prepared: Path, axes: list[Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_sweep(make_spec(tmp_path, tiny_prepared, axes, **extra))
    assert message in str(info.value)
    assert not (tmp_path / "sweeps").exists()


def test_missing_data_and_missing_base_are_named(tmp_path: Path, tiny_prepared: Path) -> None:
    spec = make_spec(tmp_path, tiny_prepared, [{"grid": {"optim.lr": [1e-3, 2e-3]}}])
    spec["base"]["data"]["path"] = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"data.path of 2 point\(s\), e.g. 'lr-0.001_s0': prepared-data folder"):
        resolve_sweep(spec)
    assert len(resolve_sweep(spec, check_data=False).points) == 2  # shipped examples validate without data
    spec["base"] = "missing.yaml"
    with pytest.raises(ConfigError, match="base 'missing.yaml'"):
        resolve_sweep(spec)
