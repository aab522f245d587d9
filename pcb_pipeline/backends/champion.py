"""The champion's weights on this machine: one download per champion, shared by the assets, the CLI and the app."""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from pcb_pipeline import settings


class NoChampionError(RuntimeError):
    pass


def require_champion(registry, what_to_do: str = "run `pcb-pipeline demo` (or the Dagster `registered_model` "
                                                  "asset) to train and register one"):
    """The registry's champion (a ModelVersion), or NoChampionError saying what to do."""
    champion = registry.champion()
    if champion is None:
        raise NoChampionError(f"No champion model is registered yet: {what_to_do}.")
    return champion


def champion_weights(registry, champion, cache_root: Path | None = None) -> Path:
    """best.pt of the champion (best.onnx beside it when registered), in a local cache shared by concurrent runs and
    processes: each download goes to a private folder and is renamed into place, so two never write the same files."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", champion.run_id or f"{champion.name}-v{champion.version}")
    final = (cache_root or settings.paths().work / "champions") / key
    cached = sorted(final.glob("*.pt")) if final.is_dir() else []
    if cached:
        return cached[0]
    tmp = final.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        weights = Path(registry.download_weights(champion, tmp))
        if tmp.resolve() not in weights.resolve().parents:  # a registry handing back a file of its own: copy it
            weights = _copy_model_files(weights, tmp / "copy")  # (best.pt and best.onnx beside it), never move it
        try:
            os.rename(weights.parent, final)
        except OSError:
            if not (final / weights.name).is_file():  # not lost to a concurrent download: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / weights.name


def _copy_model_files(weights: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for f in weights.parent.glob(f"{weights.stem}.*"):
        shutil.copyfile(f, target / f.name)
    return target / weights.name
