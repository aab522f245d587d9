"""PCB_HOME can be moved or copied: the registered champion is still found (MLflow records absolute URIs)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "defs"))
import test_automation_support as support  # noqa: E402

from pcb_pipeline.backends.mlflow_registry import MLflowRegistry  # noqa: E402


def test_a_moved_home_still_serves_its_champion(tmp_path):
    world = support.make_world(tmp_path / "old_home")
    try:
        registered = support.register_champion(world, map50=0.8)
        moved = tmp_path / "new_place" / "home"
        moved.parent.mkdir()
        shutil.move(str(world.home), str(moved))
        assert not world.home.exists()
        registry = MLflowRegistry(f"sqlite:///{moved / 'mlflow' / 'mlflow.db'}")
        champion = registry.champion()
        assert champion is not None and champion.version == registered.version
        weights = registry.download_weights(champion, tmp_path / "cache")
        assert weights.read_bytes() == support.tiny_weights().read_bytes()
    finally:
        support.restore_session_mlflow()


def test_the_champion_cache_never_moves_a_registry_s_own_files(tmp_path):
    """A registry whose download hands back the file it holds (a local folder, a test double): the cache copies."""
    from types import SimpleNamespace

    from pcb_pipeline.backends.champion import champion_weights

    held = tmp_path / "registry" / "out"
    held.mkdir(parents=True)
    (held / "best.pt").write_bytes(b"weights")
    (held / "best.onnx").write_bytes(b"onnx")

    class HandsBackItsOwn:
        def download_weights(self, version, dest_dir):
            return held / "best.pt"

    champion = SimpleNamespace(run_id="run-1", name="m", version="1")
    got = champion_weights(HandsBackItsOwn(), champion, cache_root=tmp_path / "cache")
    assert got.read_bytes() == b"weights" and (got.parent / "best.onnx").read_bytes() == b"onnx"
    assert sorted(p.name for p in held.iterdir()) == ["best.onnx", "best.pt"]  # still where the registry keeps them
    assert champion_weights(HandsBackItsOwn(), champion, cache_root=tmp_path / "cache") == got  # cached
