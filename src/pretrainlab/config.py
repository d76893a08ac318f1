"""The typed, validated config tree: YAML files plus dotted `key=value` overrides.

Two roots: `PrepareConfig` (for `pretrainlab prepare`) and `RunConfig` (for `train`, `eval`, ...).
Every model forbids unknown keys; an unknown key names itself and suggests the closest valid one,
and every other validation error names the dotted field. Validation happens before anything is
built, so a bad config costs nothing.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pretrainlab.errors import ConfigError


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------------------------
# prepare: sources, tokenizer, validation split
# --------------------------------------------------------------------------------------------

DocumentSplit = Literal["file", "separator", "blank_lines", "line"]


class _SourceBase(StrictModel):
    domain: str = Field(min_length=1, description="Named domain the documents belong to (e.g. code, stories).")
    max_documents: int | None = Field(default=None, gt=0, description="Stop after this many documents.")

    @field_validator("domain")
    @classmethod
    def _domain_is_a_name(cls, v: str) -> str:
        if not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("a domain is a name of letters, digits, '-' and '_' (it becomes a file name)")
        return v


class TextSource(_SourceBase):
    """Plain-text files: paths and globs (`**` recurses); one document per file or per separator."""

    type: Literal["text"] = "text"
    paths: list[str] = Field(min_length=1)
    split: DocumentSplit = "file"
    separator: str = "<|endoftext|>"


class JsonlSource(_SourceBase):
    """JSON Lines files; each line is an object whose `text_field` holds one document."""

    type: Literal["jsonl"] = "jsonl"
    paths: list[str] = Field(min_length=1)
    text_field: str = "text"


class ParquetSource(_SourceBase):
    """Parquet files (read with pyarrow in row batches); `text_field` is the text column."""

    type: Literal["parquet"] = "parquet"
    paths: list[str] = Field(min_length=1)
    text_field: str = "text"


class ZipSource(_SourceBase):
    """Zip archives of text files; `members` is a glob over member names."""

    type: Literal["zip"] = "zip"
    paths: list[str] = Field(min_length=1)
    members: str = "*"
    split: DocumentSplit = "file"
    separator: str = "<|endoftext|>"


class HFDiskSource(_SourceBase):
    """A Hugging Face `datasets` folder written by `save_to_disk` (optional extra `datasets`)."""

    type: Literal["hf_disk"] = "hf_disk"
    path: str
    text_field: str = "text"
    split: str | None = Field(default=None, description="For a DatasetDict folder: which split to read.")


class HFDatasetSource(_SourceBase):
    """Local files read through Hugging Face `datasets` (optional extra `datasets`), streamed, offline.

    `format` is the `datasets` builder (`parquet`, `json` for JSON Lines, `csv`, `text`); `paths` are the
    data files (globs). Nothing is downloaded: a path that does not exist is an error.
    """

    type: Literal["hf"] = "hf"
    format: Literal["parquet", "json", "csv", "text"]
    paths: list[str] = Field(min_length=1)
    text_field: str = "text"
    streaming: bool = Field(default=True, description="Iterate without building an Arrow cache on disk.")


class ProceduralSource(_SourceBase):
    """Generated documents (Procedural Pretraining, Jiang et al. 2026): `generator` names a registered
    generator (data/procedural: dyck, shuffled_dyck, copy, reverse, sort, set_ops, modular_arithmetic, ...);
    `documents` strings are drawn from a stream keyed by `seed`, so the same config gives the same corpus."""

    type: Literal["procedural"] = "procedural"
    generator: str = Field(min_length=1)
    documents: int = Field(gt=0, description="How many documents to generate.")
    seed: int = Field(default=0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict, description="The generator's own settings.")


class StdlibSource(_SourceBase):
    """The `.py` files of the running interpreter's standard library (tests excluded): real code, no download."""

    type: Literal["stdlib"] = "stdlib"
    domain: str = "code"
    max_files: int | None = Field(default=None, gt=0)


SourceConfig = Annotated[
    Union[
        TextSource, JsonlSource, ParquetSource, ZipSource, HFDiskSource, HFDatasetSource, StdlibSource,
        ProceduralSource,
    ],
    Field(discriminator="type"),
]


class TokenizerConfig(StrictModel):
    """`bpe`: train a byte-level BPE on a sample of the sources; `file`: load a tokenizer.json;
    `bytes`: 256 byte tokens plus the special tokens."""

    kind: Literal["bpe", "file", "bytes"] = "bpe"
    vocab_size: int = Field(default=8192, ge=260, le=1_048_576)
    path: str | None = Field(default=None, description="tokenizer.json to load when kind=file.")
    train_sample_bytes: int = Field(default=32_000_000, gt=0, description="Text sampled to train the BPE.")
    min_frequency: int = Field(default=2, ge=1)
    eot_token: str = "<|endoftext|>"
    pad_token: str = "<|pad|>"

    @model_validator(mode="after")
    def _path_when_file(self) -> "TokenizerConfig":
        if self.kind == "file" and not self.path:
            raise ValueError("tokenizer.kind=file needs tokenizer.path (a tokenizer.json)")
        return self


class ValidationConfig(StrictModel):
    """Held-out documents: a fraction chosen by a hash of (domain, file, document index), or named files."""

    fraction: float = Field(default=0.01, ge=0.0, le=0.5)
    files: list[str] = Field(default_factory=list, description="Globs; their documents all go to validation.")
    seed: int = 0


class FilterConfig(StrictModel):
    """One step of prepare's document filter chain (data/filters): a registered filter by name, its options,
    and the domains it applies to (default: all)."""

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    domains: list[str] | None = Field(default=None, description="Apply only to these domains (default: all).")


class PrepareConfig(StrictModel):
    """Root config of `pretrainlab prepare`."""

    sources: list[SourceConfig] = Field(min_length=1)
    filters: list[FilterConfig] = Field(
        default_factory=list, description="Document filters applied in order before the validation split."
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    output: str = "prepared/data"
    overwrite: bool = False
    strict: bool = Field(default=False, description="Make skippable problems (bad JSONL lines) fatal.")
    batch_bytes: int = Field(default=4_000_000, gt=0, description="Text per tokenizer batch.")


# --------------------------------------------------------------------------------------------
# run: data, model, optimiser, schedule, training, evaluation, callbacks
# --------------------------------------------------------------------------------------------


class MixtureStage(StrictModel):
    """One stage of a data curriculum: the domain weights in force until `until_tokens` training tokens (or
    `until_fraction` of train.steps) have been seen; the last stage has neither and runs to the end."""

    weights: dict[str, float]
    until_tokens: int | None = Field(default=None, gt=0)
    until_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_bound(self) -> "MixtureStage":
        if self.until_tokens is not None and self.until_fraction is not None:
            raise ValueError("a stage ends at until_tokens or until_fraction, not both")
        bad = [k for k, w in self.weights.items() if not (w >= 0)]
        if bad:
            raise ValueError(f"weights must be >= 0 (domain {bad[0]!r})")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one domain weight must be > 0")
        return self


class DataConfig(StrictModel):
    """Which prepared folder to train on and how windows are drawn from it."""

    path: str = "prepared/data"
    seq_len: int = Field(default=256, ge=8)
    mode: Literal["random", "packed"] = "random"
    weights: dict[str, float] | None = Field(
        default=None, description="Per-domain sampling weights; default: proportional to tokens."
    )
    stages: list[MixtureStage] = Field(
        default_factory=list,
        description="A curriculum: mixture stages in order, each until a token count or fraction of training.",
    )
    max_epochs: float | dict[str, float] | None = Field(
        default=None,
        description="Repetition cap: a domain stops being sampled after this many epochs (one value or per domain).",
    )
    allow_fingerprint_change: bool = Field(
        default=False, description="Let --resume continue on prepared data that changed."
    )

    @model_validator(mode="after")
    def _one_mixture(self) -> "DataConfig":
        if self.stages and self.weights is not None:
            raise ValueError("give either data.weights or data.stages (each stage has its own weights), not both")
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            bounded = stage.until_tokens is not None or stage.until_fraction is not None
            if bounded == last:
                raise ValueError(
                    f"stages[{i}]: every stage but the last needs until_tokens or until_fraction; the last runs to "
                    "the end and has neither"
                )
        caps = self.max_epochs if isinstance(self.max_epochs, dict) else {"*": self.max_epochs}
        for name, cap in caps.items():
            if cap is not None and not cap > 0:
                raise ValueError(f"max_epochs[{name!r}] must be > 0 (got {cap})")
        return self

    @field_validator("weights")
    @classmethod
    def _weights_non_negative(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            bad = [k for k, w in v.items() if not (w >= 0)]
            if bad:
                raise ValueError(f"weights must be >= 0 (domain {bad[0]!r})")
            if sum(v.values()) <= 0:
                raise ValueError("at least one domain weight must be > 0")
        return v


class ModelConfig(StrictModel):
    """A decoder-only transformer. `preset` fills the sizes; explicit fields override it."""

    preset: str | None = None
    n_layers: int | None = Field(default=None, ge=1)
    d_model: int | None = Field(default=None, ge=8)
    n_heads: int | None = Field(default=None, ge=1)
    n_kv_heads: int | None = Field(default=None, ge=1, description="Grouped-query attention; default n_heads.")
    mlp_hidden: int | None = Field(default=None, ge=1, description="Default: 8/3 d_model rounded up to 64.")
    vocab_size: int | None = Field(default=None, ge=2, description="Default: the tokenizer's vocabulary.")
    max_seq_len: int | None = Field(default=None, ge=8, description="Default: data.seq_len.")
    tie_embeddings: bool = True
    qk_norm: bool = False
    rope_theta: float = Field(default=10000.0, gt=0)
    norm: str = "rmsnorm"
    norm_eps: float = Field(default=1e-5, gt=0)
    mlp: str = "swiglu"
    attention: str = "sdpa"
    linear: str = "dense"
    linear_options: dict[str, Any] = Field(default_factory=dict)
    bias: bool = False
    init_std: float = Field(default=0.02, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class OptimConfig(StrictModel):
    name: str = "adamw"
    lr: float = Field(default=3e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    decay: Literal["matrices", "all", "none"] = Field(
        default="matrices", description="Which parameters get weight decay."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the optimiser.")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("betas must lie in [0, 1)")
        return v


class ScheduleConfig(StrictModel):
    """Learning-rate multiplier over steps: warm-up, then a decay shape."""

    name: str = Field(default="cosine", description="cosine | linear | constant | wsd")
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    decay_fraction: float = Field(default=0.2, gt=0.0, le=1.0, description="wsd: final fraction that decays.")


class TrainConfig(StrictModel):
    steps: int = Field(default=1000, ge=1)
    global_batch_tokens: int = Field(default=8192, ge=1, description="Tokens per optimiser step, all processes.")
    micro_batch_size: int = Field(default=16, ge=1, description="Rows per forward pass per process.")
    grad_clip: float | None = Field(default=1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool | Literal["auto"] = Field(
        default="auto",
        description="torch.compile the model; auto: on GPUs, and on CPUs for runs long enough to earn back "
        "the compile time (see train/compile_choice.py); never in deterministic mode.",
    )
    deterministic: bool = False
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    progress: bool = True
    threads: int | None = Field(default=None, ge=1)


class EvalConfig(StrictModel):
    every: int | None = Field(default=None, ge=1, description="Evaluate every N steps (and always at the end).")
    max_tokens_per_domain: int | None = Field(default=200_000, ge=1)
    batch_size: int = Field(default=16, ge=1)


class CallbackConfig(StrictModel):
    """A callback chosen by name from the callback registry, with its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class TeacherConfig(StrictModel):
    """A frozen teacher for objectives that learn from one (e.g. `objective=distill`).

    `runs` are run folders (or folders holding an `ensemble.json` written by `pretrainlab ensemble`);
    several form an ensemble whose members' predictions are combined by `combine`: the mean of the
    logits (as Kim et al. 2025 ensemble) or the mean of the probabilities. On the command line
    `teacher=RUN` and `teacher=[RUN_A, RUN_B]` are shorthands for `teacher.runs`.
    """

    runs: list[str] = Field(min_length=1, description="Teacher run folders; several form an ensemble.")
    combine: Literal["logits", "probs"] = "logits"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"runs": [value]}
        if isinstance(value, list):
            return {"runs": value}
        return value


class TrackerConfig(StrictModel):
    """An experiment tracker that receives every line metrics.jsonl gets (metrics.jsonl is always written).

    `name` is `tensorboard`, `wandb` or `mlflow` (optional extras); `options` go to the tracker, e.g.
    `{mode: offline}` for wandb or `{tracking_uri: sqlite:///mlflow.db}` (relative: in the run folder) for MLflow. CLI:
    `trackers=tensorboard` and `trackers=[tensorboard, wandb]` are shorthands.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TaskEvalConfig(StrictModel):
    """Downstream tasks scored at every evaluation (see `pretrainlab eval --tasks`).

    `tasks` maps a task name to a local file (`{arc_easy: data/arc_easy.jsonl}`); the name picks the
    format and scorer from the task registry, or `format` in a mapping value says it for any name:
    `{mytask: {path: f.jsonl, format: multiple_choice}}`. Scores go to the evaluation lines of
    metrics.jsonl as `task/<name>/<metric>`.
    """

    tasks: dict[str, Any] = Field(default_factory=dict)
    num_fewshot: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1, description="Score at most this many examples per task.")
    seed: int = Field(default=1234, description="Chooses the few-shot examples.")


class RunConfig(StrictModel):
    """Root config of `pretrainlab train`: everything needed to rerun a run exactly."""

    name: str = "run"
    out_dir: str = "runs"
    overwrite: bool = Field(default=False, description="Replace an existing run folder's outputs (else an error).")
    seed: int = 0
    device: str = "auto"
    parallel: Literal["none", "ddp", "fsdp"] = "none"
    objective: str = "next_token"
    objective_options: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    callbacks: list[CallbackConfig] = Field(default_factory=list)
    teacher: TeacherConfig | None = Field(
        default=None, description="A frozen teacher (run folders) for objectives that need one, e.g. distill."
    )
    init_from: str | None = Field(
        default=None,
        description="Start from these weights (a run folder, a checkpoint folder, or a Hugging Face Llama "
        "folder) with a fresh optimiser and schedule: continued pretraining.",
    )
    init_optimizer: bool = Field(
        default=False,
        description="With init_from a run or checkpoint: also load its optimiser state where parameter names "
        "and shapes match (e.g. SPDF keeps the sparse run's moments), instead of starting it fresh.",
    )
    trackers: list[TrackerConfig] = Field(default_factory=list)
    tasks: TaskEvalConfig = Field(default_factory=TaskEvalConfig)

    @field_validator("trackers", mode="before")
    @classmethod
    def _trackers_shorthand(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value


# --------------------------------------------------------------------------------------------
# loading: YAML + dotted overrides, with errors that name the field
# --------------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-4` (no dot) as a float, as YAML 1.2 and every user expects."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a", "b", "c"], value); the value is parsed as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value", hint="write e.g. model.d_model=256")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key", hint="write e.g. model.d_model=256")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `tree` with each dotted override applied (list items by index: sources.0.domain=x)."""
    import copy

    out = copy.deepcopy(tree)
    for item in overrides:
        path, value = parse_override(item)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, part, path[: i + 1])]
                continue
            nxt = node.get(part)
            if nxt is None:
                nxt = {}
                node[part] = nxt
            node = nxt
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, path)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(path[:-1])} is not a section")
    return out


def _list_index(node: list[Any], part: str, path: list[str]) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"{'.'.join(path)}: {part!r} is not an index of a list of {len(node)} items") from None
    if not -len(node) <= idx < len(node):
        raise ConfigError(f"{'.'.join(path)}: index {idx} is out of range (the list has {len(node)} items)")
    return idx


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or bad YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist", hint="check the path")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def validate(model_cls: type[M], tree: dict[str, Any], *, source: str = "config") -> M:
    """Validate `tree` into `model_cls`, turning pydantic errors into one ConfigError naming each field."""
    try:
        return model_cls.model_validate(tree)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            # Discriminated unions put the tag name in the path (sources.0.text.paths): drop it.
            loc = _drop_union_tags(model_cls, loc)
            field = ".".join(loc) or "(root)"
            if err["type"] == "extra_forbidden":
                suggestion = _suggest(model_cls, loc)
                msg = f"unknown key {field!r}" + (f"; did you mean {suggestion!r}?" if suggestion else "")
            elif err["type"] == "union_tag_invalid":
                msg = f"{field}: {err['msg']}"
            else:
                msg = f"{field}: {err['msg']} (got {err.get('input')!r})"
            lines.append(msg)
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def load_config(model_cls: type[M], path: str | Path | None, overrides: list[str] | None = None) -> M:
    """Load YAML (or start empty), apply dotted overrides, validate."""
    tree = load_yaml(path) if path is not None else {}
    tree = apply_overrides(tree, overrides or [])
    return validate(model_cls, tree, source=str(path) if path is not None else "config")


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (round-trips through `load_config`)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _section_fields(model_cls: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names valid at the parent of `loc` (best effort, for suggestions)."""
    cls: Any = model_cls
    for part in loc[:-1]:
        if part.isdigit():
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = _inner_model(field.annotation)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}).keys())


def _inner_model(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _suggest(model_cls: type[BaseModel], loc: list[str]) -> str | None:
    candidates = _section_fields(model_cls, loc)
    best = difflib.get_close_matches(loc[-1], candidates, n=1, cutoff=0.5)
    return ".".join(loc[:-1] + [best[0]]) if best else None


def _drop_union_tags(model_cls: type[BaseModel], loc: list[str]) -> list[str]:
    tags = {"text", "jsonl", "parquet", "zip", "hf_disk", "hf", "stdlib"}
    out = []
    for i, part in enumerate(loc):
        if part in tags and i > 0 and loc[i - 1].isdigit():
            continue
        out.append(part)
    return out
