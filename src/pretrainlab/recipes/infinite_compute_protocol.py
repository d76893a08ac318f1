"""The stages of the infinite-compute replication: data budget, grid, scaling curves, ensemble, students.

Every training run goes through `pretrainlab.science.sweep.run_sweep`, so a replication interrupted at
any point and started again skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pretrainlab.errors import PretrainlabError
from pretrainlab.recipes.infinite_compute import DEFAULT_WD, Point, Scale, base_tree, point_overrides
from pretrainlab.science.arms import stdlib_bytes
from pretrainlab.science.replication import ReplicationContext, ReplicationResult

SYNTHETIC_DOMAIN = "synthetic"
GRID_SEED = 0  # the grid picks the settings on this seed; every compared run uses other seeds


@dataclass
class BudgetData:
    """The fixed-budget data: the full D and the smaller fractions used for the data-scaling fit."""

    full: Path
    fractions: dict[float, Path]
    train_tokens: dict[str, int]  # data path -> its training tokens
    domains: list[str]


@dataclass
class Choice:
    """Settings picked from the grid for every size: the tuned (weight decay, epochs) and the standard
    recipe's best epochs at weight decay 0.1, each taken from the nearest grid size."""

    tuned: dict[str, tuple[float, int]] = field(default_factory=dict)
    default_epochs: dict[str, int] = field(default_factory=dict)
    grid_best: dict[str, tuple[float, int, float]] = field(default_factory=dict)  # size -> (wd, E, loss)


class RunBook:
    """Runs points through sweeps (one sweep folder per stage) and keeps each point's result row."""

    def __init__(self, ctx: ReplicationContext, scale: Scale, data: BudgetData) -> None:
        self.ctx, self.scale, self.data = ctx, scale, data
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.sweep_dirs: list[Path] = []

    def sweep(self, name: str, points: list[Point], *, per_seed: bool = True) -> None:
        """Run the points not run yet, one sweep folder per seed (`<name>-s<seed>`), so a point's run always
        lives in the same folder whatever `--seeds` is (a sweep repeats all its points over one seed list);
        with `per_seed=False` all points share one seed and the folder is `<name>`. The costliest points go
        first, so the last ones to finish are short."""
        todo: dict[tuple[Any, ...], Point] = {}
        for p in points:
            if p.key not in self.rows:
                todo.setdefault(p.key, p)
        seeds = sorted({p.seed for p in todo.values()})
        if not per_seed and len(seeds) > 1:
            raise ValueError(f"sweep {name!r}: points of several seeds {seeds} need per_seed=True")
        for seed in seeds:
            batch = sorted((p for p in todo.values() if p.seed == seed), key=lambda p: -self._cost(p))
            self._sweep(f"{name}-s{seed}" if per_seed else name, batch, [seed])

    def _cost(self, p: Point) -> float:
        _, layers, width, _ = next(s for s in self.scale.sizes if s[0] == p.size)
        return p.epochs * layers * width * width

    def _sweep(self, name: str, points: list[Point], seeds: list[int]) -> None:
        from pretrainlab.science.sweep import run_sweep

        full = self.data.train_tokens[self.data.full.as_posix()]
        wanted = [(p, point_overrides(self.scale, p, full)) for p in points]
        spec = {
            "name": name,
            "out_dir": str(self.ctx.out / "sweeps"),
            "base": base_tree(self.scale),
            "axes": [{"list": [o for _, o in wanted]}],
            "seeds": seeds,
            "executor": "local",
            "jobs": self.ctx.jobs,
        }
        rows = run_sweep(spec, jobs=self.ctx.jobs)
        sweep_dir = self.ctx.out / "sweeps" / name
        self.sweep_dirs.append(sweep_dir)
        by_name = {str(r["name"]): r for r in rows}
        listing = json.loads((sweep_dir / "points.json").read_text())
        failed: list[str] = []
        for p, overrides in wanted:
            for seed in seeds:
                entry = next((e for e in listing if e["seed"] == seed and _same(overrides, e["overrides"])), None)
                row = by_name.get(entry["name"]) if entry is not None else None
                if row is None or row.get("status") != "done":
                    failed.append(entry["name"] if entry else f"{p} seed {seed}")
                    continue
                self.rows[replace(p, seed=seed).key] = row
        if failed:
            raise PretrainlabError(
                f"{len(failed)} run(s) of stage {name!r} did not finish: {', '.join(failed[:5])}",
                hint=f"see the logs in {sweep_dir / 'logs'}; run the same replicate command again to resume",
            )

    def loss(self, p: Point) -> float:
        return float(self.rows[p.key]["val_loss"])

    def run_dir(self, p: Point) -> Path:
        return Path(str(self.rows[p.key]["run_dir"]))

    def params(self, p: Point) -> float:
        return float(self.rows[p.key]["params_non_embedding"])


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    return all(json.dumps(theirs.get(k), sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in ours.items())


def prepare_budget(ctx: ReplicationContext, scale: Scale) -> BudgetData:
    """Cut the fixed token budget (and its fractions) out of `--data` or the built-in stdlib corpus."""
    from pretrainlab.data.subset import write_token_budget

    source = ctx.data if ctx.data is not None else stdlib_bytes(ctx.out / "data" / "stdlib-bytes")
    root = ctx.out / "data"
    full = write_token_budget(source, root / f"budget-{scale.train_tokens}", train_tokens=scale.train_tokens,
                              val_tokens=scale.val_tokens, seed=0)
    if SYNTHETIC_DOMAIN in full.domains:
        raise PretrainlabError(f"{source} has a domain named {SYNTHETIC_DOMAIN!r}, the name the protocol gives "
                               "the ensemble's samples", hint="rename that domain when preparing the data")
    fractions: dict[float, Path] = {}
    tokens = {full.path.as_posix(): sum(full.domain_tokens("train").values())}
    for f in scale.data_fractions:
        n = int(scale.train_tokens * f)
        sub = write_token_budget(source, root / f"budget-{n}", train_tokens=n, val_tokens=scale.val_tokens, seed=0)
        fractions[f] = sub.path
        tokens[sub.path.as_posix()] = sum(sub.domain_tokens("train").values())
    return BudgetData(full=full.path, fractions=fractions, train_tokens=tokens, domains=full.domains)


def choose(scale: Scale, book: RunBook, data: Path) -> Choice:
    """Best (weight decay, epochs) per grid size, and the best epochs at the standard weight decay."""
    choice = Choice()
    order = [label for label, *_ in scale.sizes]
    for size in scale.grid_sizes:
        runs = [(wd, e, book.loss(Point(size, wd, e, GRID_SEED, data.as_posix(), "grid")))
                for wd in scale.weight_decays for e in scale.epochs]
        finite = [r for r in runs if math.isfinite(r[2])]  # a diverged run never wins
        default = [r for r in finite if r[0] == DEFAULT_WD]
        if not default:
            raise PretrainlabError(f"every weight decay {DEFAULT_WD} run of the {size} grid diverged",
                                   hint="lower the scale's learning rate")
        choice.grid_best[size] = min(finite, key=lambda r: r[2])
        best_default = min(default, key=lambda r: r[2])
        for label in order:  # every size takes the nearest grid size's choice (ties: the smaller)
            nearest = min(scale.grid_sizes, key=lambda g: (abs(order.index(g) - order.index(label)), order.index(g)))
            if nearest == size:
                choice.tuned[label] = choice.grid_best[size][:2]
                choice.default_epochs[label] = best_default[1]
    return choice


@dataclass
class Plan:
    """Every compared run of stages 2-4. Comparisons use seeds 1..n, never the grid's seed 0: the grid's
    best runs were picked on the same validation data, so reusing them would bias the tuned recipe."""

    curves: dict[str, dict[str, list[Point]]]  # role ("default" | "tuned") -> size -> seeds
    members: list[Point]
    data_runs: list[Point]  # the standard recipe at the largest size on D/8 .. D (compute fixed)
    students: list[Point] = field(default_factory=list)


def plan_runs(ctx: ReplicationContext, scale: Scale, choice: Choice, data: BudgetData) -> Plan:
    full = data.full.as_posix()
    seeds = list(range(GRID_SEED + 1, GRID_SEED + 1 + ctx.seeds))
    curves: dict[str, dict[str, list[Point]]] = {"default": {}, "tuned": {}}
    for label, *_ in scale.sizes:
        wd, e = choice.tuned[label]
        curves["tuned"][label] = [Point(label, wd, e, s, full, "tuned") for s in seeds]
        curves["default"][label] = [Point(label, DEFAULT_WD, choice.default_epochs[label], s, full, "default")
                                    for s in seeds]
    wd_m, e_m = choice.tuned[scale.member_size]
    members = [Point(scale.member_size, wd_m, e_m, GRID_SEED + 1 + k, full, "member") for k in range(scale.ensemble_k)]
    largest = scale.sizes[-1][0]
    e_l = choice.default_epochs[largest]
    data_runs = [Point(largest, DEFAULT_WD, e_l, seeds[0], path.as_posix(), "data")
                 for path in [*data.fractions.values(), data.full]]
    return Plan(curves=curves, members=members, data_runs=data_runs)


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    from pretrainlab.recipes.infinite_compute_claims import build_result

    data = prepare_budget(ctx, scale)
    book = RunBook(ctx, scale, data)
    full = data.full.as_posix()
    _say(f"data: {data.train_tokens[full]:,} training tokens in {data.full}")

    _say("stage 1/4: weight decay x epochs grid (seed %d)" % GRID_SEED)
    book.sweep("grid", [Point(size, wd, e, GRID_SEED, full, "grid") for size in scale.grid_sizes
                        for wd in scale.weight_decays for e in scale.epochs], per_seed=False)
    choice = choose(scale, book, data.full)
    plan = plan_runs(ctx, scale, choice, data)

    _say("stage 2/4: standard vs tuned recipe at every size; ensemble members; data scaling")
    curves = [p for role in plan.curves.values() for ps in role.values() for p in ps]
    book.sweep("scaling", curves + plan.members + plan.data_runs)

    _say("stage 3/4: ensembles of K = 1..%d members" % scale.ensemble_k)
    ensemble = _ensemble(ctx, scale, [book.run_dir(p) for p in plan.members], data.full)

    _say("stage 4/4: a member-sized student on the ensemble's samples")
    synth = _synthesize(ctx, scale, [book.run_dir(p) for p in plan.members], data.full)
    real_share = (1.0 - scale.synthetic_share) / len(data.domains)
    weights = tuple(sorted([(SYNTHETIC_DOMAIN, scale.synthetic_share)] + [(d, real_share) for d in data.domains]))
    m = plan.members[0]
    plan.students = [Point(m.size, m.weight_decay, m.epochs, p.seed, synth["path"], "student", weights)
                     for p in plan.curves["tuned"][m.size]]
    book.sweep("students", plan.students)

    # Everything compared with the ensemble is scored by the ensemble's own evaluator (K = 1), so the figures
    # share one precision and one set of windows.
    largest = scale.sizes[-1][0]
    rescored = {
        "largest_tuned": _score(scale, [book.run_dir(p) for p in plan.curves["tuned"][largest]], data.full),
        "students": _score(scale, [book.run_dir(p) for p in plan.students], data.full),
    }
    return build_result(ctx, scale, book, choice, data, plan, ensemble=ensemble, rescored=rescored,
                        synthetic=synth)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _score(scale: Scale, runs: list[Path], data: Path) -> list[float]:
    from pretrainlab.science.ensemble import evaluate_ensemble

    return [float(evaluate_ensemble([str(r)], data=str(data), max_tokens_per_domain=scale.val_tokens,
                                    batch_size=32, device=_device(), fit=False)["val_loss"][0]) for r in runs]


def _ensemble(ctx: ReplicationContext, scale: Scale, runs: list[Path], data: Path) -> dict[str, Any]:
    from pretrainlab.science.ensemble import evaluate_ensemble, write_ensemble

    out = ctx.out / "ensemble"
    cached = out / "ensemble.json"
    if cached.is_file():
        result = json.loads(cached.read_text())
        if [Path(m).resolve() for m in result.get("members", [])] == [Path(r).resolve() for r in runs]:
            return result
    result = evaluate_ensemble([str(r) for r in runs], data=str(data), combine="logits",
                               max_tokens_per_domain=scale.val_tokens, batch_size=32, device=_device())
    write_ensemble(result, out)
    return json.loads(cached.read_text())


def _synthesize(ctx: ReplicationContext, scale: Scale, teachers: list[Path], data: Path) -> dict[str, Any]:
    """Sample the ensemble into `data/synthetic`, reusing an earlier sample only when it was asked with the
    same teachers, token count, seed and base data."""
    from pretrainlab.data.prepared import PreparedData
    from pretrainlab.science.synthesize import synthesize

    out = ctx.out / "data" / "synthetic"
    request = {"teachers": [str(Path(t).resolve()) for t in teachers], "tokens": scale.synthetic_tokens, "seed": 0,
               "base": PreparedData(data).fingerprint, "temperature": 1.0, "combine": "logits"}
    request_file = ctx.out / "data" / "synthetic.request.json"
    if (out / "manifest.json").is_file() and request_file.is_file():
        if json.loads(request_file.read_text()) == request:
            return {"path": out.as_posix(), "manifest": PreparedData(out).manifest}
    request_file.unlink(missing_ok=True)
    path = synthesize([str(t) for t in teachers], tokens=scale.synthetic_tokens, out=str(out), data=str(data),
                      domain=SYNTHETIC_DOMAIN, combine="logits", temperature=1.0, batch_size=64, seed=0,
                      overwrite=True, progress=False)
    request_file.write_text(json.dumps(request, indent=2))
    return {"path": Path(path).as_posix(), "manifest": PreparedData(path).manifest}


def _say(text: str) -> None:
    print(f"[infinite-compute] {text}", flush=True)
