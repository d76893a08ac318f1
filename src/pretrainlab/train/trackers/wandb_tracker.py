"""Weights & Biases: one W&B run per pretrainlab run, resumed by `--resume`.

Options are `wandb.init` keyword arguments (`mode`, `project`, `entity`, `group`, `tags`, `notes`, `dir`,
`settings`, ...). Defaults: project `pretrainlab`, name = the run's name, config = the resolved run config,
dir = the run folder (W&B writes `<run>/wandb/`), and `settings.console = "off"` (W&B would otherwise
capture the terminal, which garbles the progress display; set `settings: {console: ...}` or `WANDB_CONSOLE`
to choose). `mode: offline` needs no network and no account; upload later with
`wandb sync <run>/wandb/offline-run-*`.

Online mode (W&B's default) without credentials (no `WANDB_API_KEY`, no `wandb login` entry in ~/.netrc, no
`settings.api_key`) would make `wandb.init` prompt for a login on a terminal and wait: the tracker does not
start then, with a warning naming `options: {mode: offline}` and `wandb login`, and training goes on.

The run id is kept in `<run>/trackers.json`; `--resume` reopens that id (`resume="allow"`). W&B only
accepts increasing steps, so after a resume the steps it already holds (those between the checkpoint and
the interruption) keep their first values and later ones are added.
"""

from __future__ import annotations

import os
from typing import Any

from pretrainlab.train.trackers.base import Status, Tracker, TrackerContext, register_tracker

LOCAL_MODES = ("offline", "dryrun", "disabled")  # modes that never talk to a server
DEFAULT_HOST = "https://api.wandb.ai"


class WandbLoginMissing(RuntimeError):
    """Online mode with no credentials: `wandb.init` would prompt for a login and wait."""


@register_tracker("wandb")
class WandbTracker(Tracker):
    extra = "wandb"

    def __init__(self, ctx: TrackerContext, **init_options: Any) -> None:
        super().__init__(ctx)
        import wandb  # ImportError without the wandb package

        options: dict[str, Any] = {
            "project": "pretrainlab",
            "name": ctx.run_name,
            "config": ctx.config,
            "dir": str(ctx.run_dir),
        }
        options.update(init_options)
        settings = options.get("settings")
        if settings is None or isinstance(settings, dict):
            settings = dict(settings or {})
            if "console" not in settings and not os.environ.get("WANDB_CONSOLE"):
                settings["console"] = "off"
        mode = effective_mode(options, settings)
        if mode not in LOCAL_MODES and not has_credentials(settings if isinstance(settings, dict) else {}):
            raise WandbLoginMissing(
                f"W&B mode {mode!r} needs an API key and none is configured (WANDB_API_KEY is unset and there is "
                "no `wandb login` entry in ~/.netrc); wandb.init would wait for a login. Log locally with "
                "trackers: [{name: wandb, options: {mode: offline}}] (upload later with `wandb sync`), or run "
                "`wandb login` first"
            )
        run_id = options.pop("id", None) or (ctx.state.get("id") if ctx.resume else None)  # None: W&B picks one
        if isinstance(settings, dict):
            options["settings"] = wandb.Settings(**settings)
        if ctx.resume:
            options.setdefault("resume", "allow")
        self.run = wandb.init(id=run_id, **options)
        self.state = {"id": self.run.id}
        self._first_step = int(getattr(self.run, "step", 0) or 0)  # a resumed online run: steps W&B holds

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step < self._first_step:
            return
        self.run.log(metrics, step=step)

    def log_summary(self, summary: dict[str, float], step: int) -> None:
        self.run.summary.update(summary)

    def close(self, status: Status) -> None:
        self.run.finish(exit_code=1 if status == "failed" else 0)


def effective_mode(options: dict[str, Any], settings: Any) -> str:
    """The mode wandb.init will run in: the `mode` option, then `settings.mode`, then `WANDB_MODE`
    (`WANDB_DISABLED=true` means disabled), else online."""
    mode = options.get("mode")
    if mode is None and isinstance(settings, dict):
        mode = settings.get("mode")
    if mode is None and os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1", "yes"):
        mode = "disabled"
    return str(mode or os.environ.get("WANDB_MODE") or "online")


def has_credentials(settings: dict[str, Any]) -> bool:
    """Whether W&B has credentials to start an online run without prompting: an `api_key` setting,
    `WANDB_API_KEY` / `WANDB_IDENTITY_TOKEN_FILE`, a login of this process, or a netrc entry for the host.

    Asks wandb itself where it can (`authenticate_session(prompt=False)`, wandb 0.22+), else reads the
    netrc file (`NETRC` or ~/.netrc) for the host, as older wandb versions do.
    """
    if settings.get("api_key") or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = str(settings.get("base_url") or os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST)
    try:
        from wandb.sdk.lib.wbauth.authenticate import authenticate_session
    except ImportError:
        authenticate_session = None
    if authenticate_session is not None:
        try:
            found = authenticate_session(host=host, source="pretrainlab", prompt=False, update_session=False)
            return found is not None
        except Exception:  # a malformed key is reported by wandb.init itself
            return True
    return _netrc_has(host)


def _netrc_has(host: str) -> bool:
    import netrc
    from urllib.parse import urlsplit

    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(urlsplit(host).hostname or host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])
