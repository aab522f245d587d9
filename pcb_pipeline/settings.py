"""Where local state lives and how the process is kept offline.

Imported first by every entry point (CLI, Dagster definitions, training payload, app). It only sets environment
variables and computes paths, so it is safe for every layer to import; `core` still imports nothing of ours.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
# A source checkout keeps its state beside the code (make demo / make test); an installed package uses the user's home.
DEFAULT_HOME = REPO_ROOT / ".pcb_home" if (REPO_ROOT / "pyproject.toml").is_file() else Path.home() / ".pcb_pipeline"

# Switches that stop ultralytics, MLflow, Dagster, Hugging Face and the Snowflake connector reaching for the network
# (../shared/ENVIRONMENT.md). setdefault: a user who has internet may still opt back in.
OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DAGSTER_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "SNOWFLAKE_DISABLE_PLATFORM_DETECTION": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "STREAMLIT_SERVER_HEADLESS": "true",
    "WANDB_DISABLED": "true",
    "CLEARML_OFF": "1",
    "COMET_MODE": "disabled",
}


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def stage(self) -> Path:
        return self.home / "stage"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def yolo_config(self) -> Path:
        return self.home / "ultralytics"

    @property
    def sop_index(self) -> Path:
        """The local manual search's saved index (the sop_search_service asset writes it)."""
        return self.home / "knowledge" / "sop_index"

    @property
    def work(self) -> Path:
        """Scratch space (downloaded weights, dataset builds); safe to delete."""
        return self.home / "work"


class SettingError(ValueError):
    """An environment variable holds a value the project cannot use; the message names the variable."""


def env_number(env: Mapping[str, str], name: str, default: float, *, cast: type = float,
               minimum: float | None = None, exclusive: bool = False, maximum: float | None = None,
               unit: str = "a number") -> float:
    """The one parser for numeric settings: blank means `default`; anything else must parse and respect `minimum`
    (`exclusive` makes the minimum itself invalid) and `maximum` (inclusive); NaN never passes. Raises SettingError
    naming the variable and its value."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} must be {unit}") from None
    if value != value:  # NaN
        raise SettingError(f"{name}={raw!r} must be {unit}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        raise SettingError(f"{name}={raw!r} must be {bound}")
    if maximum is not None and value > maximum:
        raise SettingError(f"{name}={raw!r} must be <= {maximum}")
    return value


def env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str, *,
               error: type[ValueError] = SettingError) -> str:
    """The one parser for settings that name one of a few words: blank means `default`, case and spaces are
    ignored; anything else raises `error` naming the variable, its value and the choices."""
    raw = (env.get(name) or "").strip()
    value = raw.lower() or default
    if value not in choices:
        options = " or ".join(f"'{c}'" for c in choices) if len(choices) == 2 else \
            "one of " + ", ".join(f"'{c}'" for c in choices)
        raise error(f"{name}={raw!r} must be {options}")
    return value


def min_map50(env: Mapping[str, str]) -> float:
    """PCB_MIN_MAP50: the registry's promotion threshold, an mAP50 in [0, 1] (default 0.5), on either backend."""
    return env_number(env, "PCB_MIN_MAP50", 0.5, minimum=0.0, maximum=1.0, unit="a number in [0, 1]")


def pcb_home(env: Mapping[str, str] | None = None) -> Path:
    """PCB_HOME (blank: the default home) from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    return Path(env.get("PCB_HOME") or DEFAULT_HOME).expanduser().resolve()


def paths(env: Mapping[str, str] | None = None) -> Paths:
    return Paths(pcb_home(env))


def configure(home: Path | None = None) -> Paths:
    """Create the local state folders and set every offline switch. Idempotent; returns the paths."""
    if home is not None:
        os.environ["PCB_HOME"] = str(Path(home).resolve())
    return prepare(paths())


def prepare(p: Paths) -> Paths:
    """`configure` for paths already read (PipelineSettings.paths): the folders, the offline switches, and the
    Dagster / Ultralytics / MLflow homes where the environment names none. Idempotent; returns `p`."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    for d in (p.stage, p.mlflow_artifacts, p.dagster_home, p.work, p.yolo_config / "Ultralytics"):
        d.mkdir(parents=True, exist_ok=True)
    _write_dagster_yaml(p.dagster_home)
    _provide_ultralytics_font(p.yolo_config / "Ultralytics")
    os.environ.setdefault("DAGSTER_HOME", str(p.dagster_home))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(p.yolo_config))
    os.environ.setdefault("MLFLOW_TRACKING_URI", p.mlflow_uri)
    return p


def _write_dagster_yaml(dagster_home: Path) -> None:
    cfg = dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")


def _provide_ultralytics_font(folder: Path) -> None:
    """Ultralytics downloads Arial.ttf for plots and dataset checks; give it matplotlib's DejaVuSans instead."""
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = folder / name
        if target.exists():
            continue
        try:
            import matplotlib

            src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            target.write_bytes(src.read_bytes())
        except Exception:  # matplotlib absent: ultralytics then only fails where it draws text
            pass
