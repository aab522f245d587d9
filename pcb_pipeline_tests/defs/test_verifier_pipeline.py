"""The two-stage reference inspector as a first-class model of the asset graph: trained_detector trains it (profile
of kind verifier), the gate registers it, the champion download serves it through the one Detector, and
defect_logs writes its calls for the held-out boards read with their templates."""
from __future__ import annotations

import dagster as dg
import pytest

import test_automation_support as support
from pcb_pipeline.defs.assets import (defect_logs, pcb_metadata, raw_pcb_images, registered_model,
                                      trained_detector, yolo_dataset)


def _run(w, input_mode: str, min_map50: float = 0.0):
    return dg.materialize(
        [raw_pcb_images, pcb_metadata, yolo_dataset, trained_detector, registered_model, defect_logs],
        resources=w.resources(min_map50=min_map50), raise_on_error=False, run_config={"ops": {
            "raw_pcb_images": {"config": {"synthetic_groups": 3, "synthetic_images_per_group": 4}},
            "yolo_dataset": {"config": {"input_mode": input_mode}},
            "trained_detector": {"config": {"profile": "verifier_smoke"}},
            "defect_logs": {"config": {"confidence": 0.001}}}})


@pytest.fixture(scope="module")
def verifier_world(tmp_path_factory):
    w = support.make_world(tmp_path_factory.mktemp("verifier_world"))
    res = _run(w, "reference")
    yield w, res
    support.restore_session_mlflow()


def _metadata(res, node):
    return {k: getattr(v, "value", v) for k, v in res.asset_materializations_for_node(node)[-1].metadata.items()}


def test_the_graph_trains_registers_and_serves_the_two_stage_inspector(verifier_world):
    w, res = verifier_world
    assert res.success
    trained = _metadata(res, "trained_detector")
    assert trained["model_kind"] == "verifier" and trained["input_mode"] == "reference"
    assert 0.0 <= trained["map50"] <= 1.0 and trained["onnx"].endswith("best.onnx")
    assert "false_calls_per_board_at_aoi_recall" in trained and "aoi_false_calls_per_board_at_recall_0_99" in trained
    registered = _metadata(res, "registered_model")
    assert registered["promoted"] and registered["mlflow_run_id"] == trained["mlflow_run_id"]
    logs = _metadata(res, "defect_logs")
    assert logs["model_input"] == "reference" and logs["images"] > 0 and logs["unreadable_images"] == []


def test_the_champion_download_is_a_verifier_behind_the_detector(verifier_world, tmp_path):
    from pcb_pipeline.backends.champion import champion_weights
    from pcb_pipeline.vision.detector import Detector

    w, _ = verifier_world
    reg = w.registry()
    weights = champion_weights(reg, reg.champion(), cache_root=tmp_path)
    detector = Detector(weights)
    assert (detector.kind, detector.backend, detector.needs_template) == ("verifier", "onnxruntime", True)


def test_a_dataset_of_boards_alone_fails_training_with_the_reason(tmp_path_factory):
    w = support.make_world(tmp_path_factory.mktemp("verifier_test_mode"))
    try:
        res = _run(w, "test")
        assert not res.success
        failure = next(e for e in res.all_events if e.is_step_failure)
        assert failure.step_key == "trained_detector"
        assert "input_mode=reference" in failure.event_specific_data.error.message
        assert not w.registry().champion()  # nothing trained, nothing registered
    finally:
        support.restore_session_mlflow()
