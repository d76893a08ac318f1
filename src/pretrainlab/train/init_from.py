"""`init_from`: start a run from another model's weights with a fresh optimiser and schedule
(continued pretraining).

The source is a pretrainlab run folder (its newest complete checkpoint that verifies), a checkpoint folder
(`<run>/checkpoints/step-<N>`), or a Hugging Face Llama folder (config.json + safetensors, possibly sharded).

The architecture comes from the source, as litgpt's `--initial_checkpoint_dir` takes it from the checkpoint:
every model field the run leaves unset is filled from the source, so `init_from=HF_DIR` alone is a complete
model section, and the run's config.yaml records the filled fields. A shape field the run does set
(`n_layers`, `d_model`, `n_heads`, `n_kv_heads`, `mlp_hidden`, `vocab_size`, `tie_embeddings`, `bias`, the
component names, `qk_norm`, or a `preset`) must agree with the source, else a ConfigError names it.
`rope_theta` and `norm_eps` may be set to other values on purpose (e.g. a larger theta for longer
context); `max_seq_len` defaults to the larger of the source's and `data.seq_len`; `dropout` and
`init_std` are the run's own.

The data's tokenizer must fit the source's embedding (its vocabulary at most the source's rows); text
encoded differently from the source's own tokenizer (when it is at hand) is warned about.

The weights are loaded into the freshly built model before DDP/FSDP wrap it, one tensor at a time (the
source's full state is never held next to the model's). `resolve_init_from` decides what a run needs: a
resumed run whose folder has a checkpoint that verifies (the one `--resume` restores) takes its filled model
section from its own config.yaml and never opens the source, which may be gone by then; any other run,
including a resume whose checkpoints all fail verification (`--resume` then starts from step 0, with a
warning), opens the source and starts from its weights.

The parameterisation of the projections (`model.linear`, `model.linear_options`) may differ from the source's:
a run that names its own is converted on load, projection by projection, through the source's effective
weights (`model/surgery.py: load_converted`): dense -> `low_rank` by truncated SVD (PELA's first step, Guo et
al. 2024; the forward equals the rank-r truncation, the dense model's at full rank); `masked` -> dense (SPDF's
dense fine-tuning, Thangarasa et al. 2023: `weight` is loaded, masked entries start at exactly 0 and train,
the mask is dropped); `low_rank` or `sparse_low_rank` -> dense (their effective weight) or another rank. A run
that leaves `model.linear` unset keeps the source's parameterisation (and its options unless it sets them).
Nothing is converted into `masked` (ConfigError).

`init_optimizer: true` (a run or checkpoint source only) also loads the source's optimiser state (e.g. AdamW's
moments and step count) for every parameter whose name and shape are the same in both models, as if the
source run continued; the others (e.g. converted projections) start fresh, as every parameter does by
default. The optimiser must be the source's (`optim.name`) with the source's `optim.options` (GaLore's rank,
proj_type, min_dim, ... set the state's shapes and meaning; defaults count as written), else a ConfigError
names the option before the run folder is made; each loaded state tensor's shape is checked against what the
optimiser makes (optim/state_check.py) before it is loaded. Its hyperparameters (lr, betas, weight decay) and
the schedule are the run's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pretrainlab.config import ModelConfig, RunConfig
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import CheckpointError, ConfigError, DataError

SHAPE_FIELDS = (
    "n_layers", "d_model", "n_heads", "n_kv_heads", "mlp_hidden", "vocab_size", "tie_embeddings", "bias",
    "norm", "mlp", "attention", "qk_norm",
)
LINEAR_FIELDS = ("linear", "linear_options")  # converted on load when the run names its own
FILLED_FIELDS = ("rope_theta", "norm_eps")
PROBE_TEXT = "The quick brown fox jumps over 13 lazy dogs.\n\tdef f(x):\n\t\treturn x  # naïve café, 日本語 ✓"

Say = Callable[[str], None]


@dataclass
class InitSource:
    """Where the starting weights come from, and the source's resolved model config."""

    path: Path
    kind: str  # "hf" | "run" | "checkpoint"
    model: ModelConfig
    checkpoint: Path | None = None  # kind run / checkpoint
    run_config: RunConfig | None = None  # kind run / checkpoint
    init_optimizer: bool = False  # set by `configure` from the run's config
    loaded: bool = False  # set by `load_into` when the weights were loaded (not a resume of the run's own)

    def describe(self) -> str:
        if self.kind == "hf":
            return f"the Hugging Face Llama folder {self.path}"
        return f"checkpoint {self.checkpoint}"

    # -- the config ------------------------------------------------------------------------

    def configure(self, cfg: RunConfig, data: PreparedData, *, warn: Say = print) -> RunConfig:
        """`cfg` with its model section filled from the source and checked against it (see the module doc)."""
        model = fill_model_config(cfg.model, self.model, data_vocab=data.vocab_size, seq_len=cfg.data.seq_len,
                                  source=self.describe())
        if self.model.vocab_size is not None and data.vocab_size > self.model.vocab_size:
            raise DataError(
                f"the data {data.path} has a vocabulary of {data.vocab_size} tokens, but {self.describe()} "
                f"embeds only {self.model.vocab_size}",
                hint=self._tokenizer_hint(),
            )
        self._check_tokenizer(data, warn)
        if model.linear == "masked" and _linear_of(model) != _linear_of(self.model):
            raise ConfigError(
                f"model.linear='masked': init_from does not convert {self.describe()} (model.linear="
                f"{self.model.linear!r}, options {dict(self.model.linear_options)}) into a masked model: its "
                "random mask would cut the source's weights at random",
                hint="leave model.linear unset to continue with the source's own parameterisation, or prune a "
                "dense run with the gradual_pruning callback",
            )
        if cfg.init_optimizer:
            self._check_init_optimizer(cfg)
        self.init_optimizer = cfg.init_optimizer
        return cfg.model_copy(update={"model": model})

    def _check_init_optimizer(self, cfg: RunConfig) -> None:
        if self.kind == "hf":
            raise ConfigError(
                f"init_optimizer=true: {self.describe()} holds no optimiser state",
                hint="set init_optimizer=false (the default) or start from a pretrainlab run or checkpoint",
            )
        assert self.run_config is not None
        theirs = self.run_config.optim.name
        if theirs != cfg.optim.name:
            raise ConfigError(
                f"init_optimizer=true: optim.name={cfg.optim.name!r} but {self.describe()} was trained with "
                f"optim.name={theirs!r}, whose state this optimiser cannot take",
                hint=f"set optim.name={theirs} or init_optimizer=false",
            )
        ours_opts, theirs_opts = _comparable_options(cfg.optim), _comparable_options(self.run_config.optim)
        for key in sorted(set(ours_opts) | set(theirs_opts)):
            mine, source = ours_opts.get(key, _UNSET), theirs_opts.get(key, _UNSET)
            if mine != source:
                raise ConfigError(
                    f"init_optimizer=true: optim.options.{key}={_show(mine)} but {self.describe()} was trained "
                    f"with optim.options.{key}={_show(source)}; its optimiser state belongs to those options "
                    "(e.g. GaLore's rank sets the shapes of its moments)",
                    hint="set init_optimizer=false (a fresh optimiser), or use the source's options: "
                    + (f"optim.options.{key}={_show(source)}" if source is not _UNSET else f"remove optim.options.{key}"),
                )

    def _tokenizer_hint(self) -> str:
        if self.kind == "hf":
            return (
                f"prepare the data with the model's own tokenizer: tokenizer.kind=file "
                f"tokenizer.path={self.path / 'tokenizer.json'}; if that tokenizer has no padding token "
                "pretrainlab adds one past its vocabulary, so name an unused token of it instead, e.g. "
                "tokenizer.pad_token='<unk>' (Llama 2) or tokenizer.pad_token='<|reserved_special_token_0|>' "
                "(Llama 3)"
            )
        assert self.run_config is not None
        return f"prepare the data with the source run's tokenizer (that of {self.run_config.data.path})"

    def _check_tokenizer(self, data: PreparedData, warn: Say) -> None:
        theirs = self._source_token_ids()
        if theirs is None:
            return
        ours = list(data.tokenizer.encode(PROBE_TEXT))
        if ours != theirs:
            warn(
                f"warning: init_from: the data {data.path} is tokenized differently from {self.describe()} "
                "(a probe text gives other ids); its embeddings will not mean what they meant. "
                + self._tokenizer_hint()
            )

    def _source_token_ids(self) -> list[int] | None:
        """The probe text's ids under the source's own tokenizer; None when it is not at hand."""
        try:
            if self.kind == "hf":
                path = self.path / "tokenizer.json"
                if not path.is_file():
                    return None
                from tokenizers import Tokenizer

                return list(Tokenizer.from_file(str(path)).encode(PROBE_TEXT, add_special_tokens=False).ids)
            assert self.run_config is not None
            return list(PreparedData(self.run_config.data.path).tokenizer.encode(PROBE_TEXT))
        except Exception:  # an unreadable or absent source tokenizer is no reason to stop: no check then
            return None

    # -- the weights -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """The source's weights under pretrainlab names (float32 for Hugging Face folders)."""
        return dict(self.tensors())

    def tensors(self) -> Iterator[tuple[str, Tensor]]:
        """(pretrainlab name, tensor) pairs of the source, each read from disk when reached."""
        if self.kind == "hf":
            from pretrainlab.eval.hf_import import iter_hf_llama

            return iter_hf_llama(self.path)[1]
        assert self.checkpoint is not None
        return _checkpoint_tensors(self.checkpoint)

    def load_into(self, model: nn.Module, *, run_dir: Path | None = None, say: Say = print) -> bool:
        """Copy the source's weights into `model` (built from the configured config), tensor by tensor;
        True when loaded.

        `run_dir` is given for a resumed run: when it has a checkpoint that verifies (the one the trainer's
        restore picks) nothing is loaded here; a run whose checkpoints all fail verification starts from
        the source, as it would with none.
        """
        from pretrainlab.train.checkpoint import find_latest_checkpoint

        if run_dir is not None and find_latest_checkpoint(run_dir, warn=_quiet) is not None:
            return False
        target = getattr(model, "cfg", None)
        if isinstance(target, ModelConfig) and _linear_of(target) != _linear_of(self.model):
            from pretrainlab.model.surgery import load_converted

            report = load_converted(self.tensors(), model, source_linear=self.model.linear,
                                    source_options=self.model.linear_options, bias=self.model.bias,
                                    describe=self.describe())
            how = (f"; model.linear {self.model.linear!r} -> {target.linear!r}: {report.describe()}")
        else:
            self._copy_into(model)
            how = ""
        self.loaded = True
        optimiser = ("optimiser state where names and shapes match" if self.init_optimizer
                     else "fresh optimiser")
        say(f"init_from: weights from {self.describe()}{how} ({optimiser}, fresh schedule)")
        return True

    def _copy_into(self, model: nn.Module) -> None:
        """Tensor by tensor into a model of the source's own parameterisation."""
        from pretrainlab.model.tensor_copy import TensorCopier

        copier = TensorCopier(model.state_dict(), self.describe())
        for name, t in self.tensors():
            copier.copy(name, t)
            del t
        copier.finish()

    # -- the optimiser ---------------------------------------------------------------------

    def load_optimizer_into(self, model: nn.Module, optimizer: Any, *, say: Say = print) -> list[str]:
        """With `init_optimizer`, after `load_into` loaded the weights: load the source's optimiser state for
        every parameter whose name and shape the source shares (`model` may be DDP/FSDP-wrapped; every rank
        calls this); the others keep a fresh state. Returns the names loaded ([] when nothing is to do)."""
        if not (self.init_optimizer and self.loaded):
            return []
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        from pretrainlab.objectives.base import unwrap

        assert self.checkpoint is not None
        source = _checkpoint_optimizer_state(self.checkpoint)
        shapes = _checkpoint_shapes(self.checkpoint)
        plain = unwrap(model)
        params = dict(plain.named_parameters())
        ours = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
        names = [n for group in ours["param_groups"] for n in group["params"]]
        matched = [n for n in names if n in source and n in params and shapes.get(n) == tuple(params[n].shape)]
        if matched:
            from pretrainlab.optim.state_check import check_state_shapes

            check_state_shapes(optimizer, params, {n: source[n] for n in matched}, source=self.describe(),
                               hint="the source's config.yaml does not describe its optimiser state: set "
                               "init_optimizer=false (a fresh optimiser)")
            partial = {"state": {n: source[n] for n in matched}, "param_groups": ours["param_groups"]}
            set_optimizer_state_dict(model, optimizer, partial,
                                     options=StateDictOptions(full_state_dict=True, strict=False))
            keep = {id(params[n]) for n in matched}
            for p in list(optimizer.state):  # the loader initialised every state: unmatched ones start fresh
                if id(p) not in keep:
                    del optimizer.state[p]
        fresh = len(names) - len(matched)
        say(f"init_from: optimiser state of {len(matched)} of {len(names)} parameters from {self.describe()}"
            + (f"; {fresh} start fresh (not in the source, or of another shape)" if fresh else ""))
        return matched


def _quiet(_: str) -> None:
    pass


_UNSET: Any = object()


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else repr(value)


def _comparable_options(optim: Any) -> dict[str, Any]:
    """`optim.options` as the optimiser reads them: galore/fira's parsed (defaults filled, so writing a
    default out equals leaving it unset); any other optimiser's as written."""
    if optim.name in ("galore", "fira"):
        from dataclasses import asdict

        from pretrainlab.optim.galore_options import parse_options

        return asdict(parse_options(optim))
    return dict(optim.options)


def _linear_of(model: ModelConfig) -> tuple[str, dict[str, Any]]:
    return model.linear, dict(model.linear_options)


def _checkpoint_optimizer_state(ckpt: Path) -> dict[str, Any]:
    """The per-parameter optimiser state of a checkpoint (keyed by parameter name), verified first."""
    from pretrainlab.train.checkpoint import STATE_FILE, _load_state_file, verify_checkpoint

    verify_checkpoint(ckpt)
    state = _load_state_file(ckpt / STATE_FILE)
    optim = state.get("optimizer")
    if not isinstance(optim, dict) or not isinstance(optim.get("state"), dict):
        raise CheckpointError(f"{ckpt / STATE_FILE} holds no optimiser state",
                              hint="set init_optimizer=false, or use a checkpoint written by pretrainlab train")
    return optim["state"]


def _checkpoint_shapes(ckpt: Path) -> dict[str, tuple[int, ...]]:
    """Each model tensor's shape, from the safetensors header (no tensor is read)."""
    from safetensors import safe_open

    from pretrainlab.train.checkpoint import MODEL_FILE

    with safe_open(str(ckpt / MODEL_FILE), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _checkpoint_tensors(ckpt: Path) -> Iterator[tuple[str, Tensor]]:
    """A pretrainlab checkpoint's model tensors, verified first (checksums), then read one at a time."""
    from safetensors import safe_open

    from pretrainlab.train.checkpoint import MODEL_FILE, verify_checkpoint

    verify_checkpoint(ckpt)
    try:
        handle = safe_open(str(ckpt / MODEL_FILE), framework="pt")
        names = sorted(handle.keys())
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{ckpt / MODEL_FILE} is not a readable safetensors file ({e})",
                              hint="use an earlier checkpoint") from None
    for name in names:
        yield name, handle.get_tensor(name)


def resolve_init_from(
    cfg: RunConfig, data: PreparedData, *, run_dir: Path, resume: bool, warn: Say = print
) -> tuple[RunConfig, InitSource | None]:
    """`cfg` with its model section filled for `init_from`, and the source to load weights from (None: the
    run restores a checkpoint of its own instead).

    A resumed run whose folder has a checkpoint that verifies fills its model from its own config.yaml
    (where the first session recorded the filled model) and does not open the source at all; otherwise
    the source is opened and checked (see `InitSource.configure`).
    """
    from pretrainlab.train.checkpoint import find_latest_checkpoint
    from pretrainlab.train.run_folder import CONFIG_FILE, load_run_config

    saved_path = run_dir / CONFIG_FILE
    if resume and saved_path.is_file() and find_latest_checkpoint(run_dir, warn=_quiet) is not None:
        saved = load_run_config(run_dir)
        model = fill_model_config(cfg.model, saved.model, data_vocab=data.vocab_size, seq_len=cfg.data.seq_len,
                                  source=f"the run's own {saved_path} (written when it started from it)")
        return cfg.model_copy(update={"model": model}), None
    assert cfg.init_from is not None
    source = open_init_source(cfg.init_from)
    return source.configure(cfg, data, warn=warn), source


def open_init_source(path: str | Path) -> InitSource:
    """Recognise `path` (HF folder, run folder or checkpoint folder) and read its model config."""
    from pretrainlab.eval.hf_import import is_hf_folder, read_hf_config
    from pretrainlab.train.checkpoint import MODEL_FILE, find_latest_checkpoint

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(
            f"init_from={str(path)!r} does not exist or is not a folder",
            hint="point init_from at a run folder, a checkpoint folder (run/checkpoints/step-N) or a Hugging "
            "Face Llama folder",
        )
    if is_hf_folder(p):
        return InitSource(path=p, kind="hf", model=read_hf_config(p))
    if (p / "config.yaml").is_file():
        ckpt = find_latest_checkpoint(p)
        if ckpt is None:
            raise CheckpointError(f"init_from={str(path)!r}: the run has no complete checkpoint that verifies",
                                  hint="let the source run finish (it checkpoints at the end)")
        return _from_checkpoint(p, ckpt, "run")
    if (p / MODEL_FILE).is_file() and (p.parent.parent / "config.yaml").is_file():
        return _from_checkpoint(p.parent.parent, p, "checkpoint")
    raise ConfigError(
        f"init_from={str(path)!r} is neither a run folder (config.yaml), a checkpoint folder (model.safetensors "
        "inside run/checkpoints/) nor a Hugging Face folder (config.json)",
        hint="point init_from at one of those",
    )


def _from_checkpoint(run_dir: Path, ckpt: Path, kind: str) -> InitSource:
    from safetensors import safe_open

    from pretrainlab.model import resolve_model_config
    from pretrainlab.train.checkpoint import MODEL_FILE
    from pretrainlab.train.run_folder import load_run_config

    run_cfg = load_run_config(run_dir)
    try:
        with safe_open(str(ckpt / MODEL_FILE), framework="pt") as f:
            rows = int(f.get_slice("embed.weight").get_shape()[0])
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{ckpt / MODEL_FILE}: no readable embed.weight ({e})",
                              hint="use a complete checkpoint written by pretrainlab") from None
    model = resolve_model_config(run_cfg.model, vocab_size=rows, seq_len=run_cfg.data.seq_len)
    return InitSource(path=ckpt, kind=kind, model=model, checkpoint=ckpt, run_config=run_cfg)


def fill_model_config(run: ModelConfig, src: ModelConfig, *, data_vocab: int, seq_len: int, source: str) -> ModelConfig:
    """The run's model section with every unset field taken from the source's resolved config `src`.

    Fields the run sets explicitly (pydantic's `model_fields_set`, values other than None) are kept; a shape
    field (SHAPE_FIELDS, or a size its `preset` implies) that differs from the source's is a ConfigError
    naming it. `model.linear` and `model.linear_options` may differ (the weights are converted on load); a
    run that names no other `linear` takes the source's, with its options unless it sets them. `source`
    names the source in messages.
    """
    from pretrainlab.model import resolve_model_config
    from pretrainlab.model.resolve import SIZE_FIELDS

    explicit = {f: getattr(run, f) for f in run.model_fields_set if getattr(run, f) is not None}
    if "preset" in explicit:  # the preset's sizes count as set
        resolved = resolve_model_config(run, vocab_size=data_vocab, seq_len=seq_len)
        for f in SIZE_FIELDS:
            explicit.setdefault(f, getattr(resolved, f))
    for f in SHAPE_FIELDS:
        if f in explicit and explicit[f] != getattr(src, f):
            via = f" (from model.preset={explicit['preset']!r})" if f not in run.model_fields_set else ""
            raise ConfigError(
                f"model.{f}={explicit[f]!r}{via} does not match init_from: {source} has {f}={getattr(src, f)!r}",
                hint=f"remove model.{f}" + (" and model.preset" if via else "")
                + " from the config (init_from fills the model from the source), or start from a model of this shape",
            )
    update: dict[str, Any] = {f: getattr(src, f) for f in SHAPE_FIELDS + FILLED_FIELDS if f not in explicit}
    # the parameterisation: the run's own when it names another (converted on load), else the source's,
    # with the source's options unless the run sets them
    if explicit.get("linear", src.linear) == src.linear:
        update.update({f: getattr(src, f) for f in LINEAR_FIELDS if f not in explicit})
    update["preset"] = None
    if "max_seq_len" not in explicit:
        update["max_seq_len"] = max(int(src.max_seq_len or 0), seq_len)
    return ModelConfig.model_validate({**run.model_dump(), **update})
