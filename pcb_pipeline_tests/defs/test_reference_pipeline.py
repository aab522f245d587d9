"""The asset graph with a reference-aware model: the dataset holds composites, and held-out inference reads each
board with its template from raw/; a board whose template is missing is that board's error, the rest is stored."""
from __future__ import annotations

import dagster as dg
import pytest
import yaml

import test_automation_support as support
from pcb_pipeline.defs.assets import (DATASET_PREFIX, RAW_PREFIX, defect_logs, pcb_metadata, raw_pcb_images,
                                      yolo_dataset)


@pytest.fixture(scope="module")
def reference_world(tmp_path_factory):
    """Synthetic boards landed, a reference-mode dataset, and a smoke reference model as the world's champion."""
    from pcb_pipeline.vision import train

    w = support.make_world(tmp_path_factory.mktemp("reference_world"))
    res = dg.materialize([raw_pcb_images, pcb_metadata, yolo_dataset], resources=w.resources(), run_config={"ops": {
        "raw_pcb_images": {"config": {"synthetic_groups": 3, "synthetic_images_per_group": 4}},
        "yolo_dataset": {"config": {"input_mode": "reference"}}}})
    assert res.success
    dataset = w.stage().get_dir(DATASET_PREFIX, w.home / "dataset_copy")
    out = w.home / "reference_model"
    train.train(train.parse_args(["--data", str(dataset), "--profile", "smoke", "--out", str(out)]))
    reg = w.registry()
    version = reg.register(support.fake_training_result(w, 0.9), out / "best.pt", out / "best.onnx")
    assert reg.promote_if_better(version, 0.0).promoted
    yield w, res
    support.restore_session_mlflow()


def _heldout(w):
    return dg.materialize([defect_logs], resources=w.resources(min_map50=0.0), raise_on_error=False,
                          run_config={"ops": {"defect_logs": {"config": {"confidence": 0.001}}}})


def test_the_dataset_holds_composites(reference_world):
    w, res = reference_world
    md = res.asset_materializations_for_node("yolo_dataset")[0].metadata
    assert md["input_mode"].value == "reference"
    data = yaml.safe_load((w.stage_root / DATASET_PREFIX / "data.yaml").read_text())
    assert data["pcb_input"] == "reference"
    images = list((w.stage_root / DATASET_PREFIX / "images").rglob("*.*"))
    assert images and all(p.suffix == ".png" for p in images)


def test_heldout_inference_reads_boards_with_their_templates(reference_world):
    w, _ = reference_world
    val_groups = yaml.safe_load((w.stage_root / DATASET_PREFIX / "groups.yaml").read_text())["val"]
    res = _heldout(w)
    assert res.success
    md = res.asset_materializations_for_node("defect_logs")[0].metadata
    assert md["model_input"].value == "reference" and md["images_from"].value.startswith(RAW_PREFIX)
    assert md["unreadable_images"].value == []
    n_val = sum(1 for g in val_groups for _ in (w.stage_root / RAW_PREFIX / "PCBData" / g).rglob("*_test.*"))
    assert md["images"].value == n_val > 0
    paths = w.warehouse().query("SELECT DISTINCT image_path FROM BOARD_INSPECTIONS WHERE batch_id = 'heldout'")
    assert len(paths) == n_val
    assert all(p.startswith(f"{RAW_PREFIX}/PCBData/") and p.endswith("_test.jpg") and
               any(f"/{g}/" in p for g in val_groups) for p in paths["image_path"])


def test_a_board_without_its_template_is_reported_and_the_rest_stored(reference_world):
    w, _ = reference_world
    val_groups = yaml.safe_load((w.stage_root / DATASET_PREFIX / "groups.yaml").read_text())["val"]
    template = sorted((w.stage_root / RAW_PREFIX / "PCBData" / val_groups[0]).rglob("*_temp.*"))[0]
    board = template.with_name(template.name.replace("_temp", "_test"))
    template.unlink()
    res = _heldout(w)
    assert res.success
    md = res.asset_materializations_for_node("defect_logs")[0].metadata
    board_path = board.relative_to(w.stage_root).as_posix()
    (error,) = md["unreadable_images"].value
    from pcb_pipeline import settings

    assert error.startswith(board_path) and "template" in error
    assert str(settings.paths().work) not in error  # where boards and templates were downloaded: not shown
    stored = w.warehouse().query("SELECT image_path FROM BOARD_INSPECTIONS WHERE batch_id = 'heldout'")
    assert board_path not in set(stored["image_path"]) and len(stored) == md["images"].value > 0


def test_an_unknown_input_mode_fails_clearly_and_keeps_the_dataset(reference_world):
    w, _ = reference_world
    before = (w.stage_root / DATASET_PREFIX / "data.yaml").read_text()
    res = dg.materialize([yolo_dataset], resources=w.resources(), raise_on_error=False,
                         run_config={"ops": {"yolo_dataset": {"config": {"input_mode": "stereo"}}}})
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure)
    assert "unknown model input mode 'stereo'" in str(failure.event_specific_data.error)
    assert (w.stage_root / DATASET_PREFIX / "data.yaml").read_text() == before


def test_templates_under_an_inference_prefix_are_not_boards(reference_world):
    """Pointing inference at a raw group folder: the boards are inspected, their templates are not."""
    w, _ = reference_world
    val_groups = yaml.safe_load((w.stage_root / DATASET_PREFIX / "groups.yaml").read_text())["val"]
    prefix = f"{RAW_PREFIX}/PCBData/{val_groups[-1]}"
    res = dg.materialize([defect_logs], resources=w.resources(min_map50=0.0), raise_on_error=False,
                         run_config={"ops": {"defect_logs": {"config": {"image_prefix": prefix, "batch_id": "g"}}}})
    assert res.success
    paths = w.warehouse().query("SELECT image_path FROM BOARD_INSPECTIONS WHERE batch_id = 'g'")["image_path"]
    assert len(paths) > 0 and all(p.endswith("_test.jpg") for p in paths)


def test_a_batch_where_no_board_can_be_inspected_fails_and_keeps_its_rows(reference_world):
    w, _ = reference_world
    val_groups = yaml.safe_load((w.stage_root / DATASET_PREFIX / "groups.yaml").read_text())["val"]
    prefix = f"{RAW_PREFIX}/PCBData/{val_groups[-1]}"
    cfg = {"ops": {"defect_logs": {"config": {"image_prefix": prefix, "batch_id": "kept", "confidence": 0.001}}}}
    count = "SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS WHERE batch_id = 'kept'"
    assert dg.materialize([defect_logs], resources=w.resources(min_map50=0.0), run_config=cfg).success
    before = w.warehouse().query(count)["n"][0]
    templates = list((w.stage_root / prefix).rglob("*_temp.*"))
    for t in templates:  # every board of the batch loses its template
        t.rename(t.with_name(t.name + ".away"))
    try:
        res = dg.materialize([defect_logs], resources=w.resources(min_map50=0.0), run_config=cfg,
                             raise_on_error=False)
    finally:
        for t in templates:
            t.with_name(t.name + ".away").rename(t)
    assert not res.success and before > 0
    failure = next(e for e in res.all_events if e.is_step_failure)
    assert "could be inspected, the batch's rows are kept" in str(failure.event_specific_data.error)
    assert w.warehouse().query(count)["n"][0] == before


def test_an_upload_runs_once_its_template_is_beside_it(reference_world):
    """The upload partition with a reference champion: without a template the run fails saying so and stores
    nothing; once the template lands beside the board (the sensor then re-requests it), the board is logged."""
    from pcb_pipeline.defs.assets import upload_defect_logs

    w, _ = reference_world
    board, template = next((b, t) for b in sorted((w.stage_root / RAW_PREFIX / "PCBData").rglob("*_test.jpg"))
                           for t in b.parent.glob(b.name.replace("_test.jpg", "_temp.*")))
    w.upload("line1/77_test.jpg", board.read_bytes())
    key = "line1/77_test.jpg"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("uploads", [key])

        def run():
            return dg.materialize([upload_defect_logs], resources=w.resources(min_map50=0.0), partition_key=key,
                                  instance=instance, raise_on_error=False,
                                  run_config={"ops": {"upload_defect_logs": {"config": {"confidence": 0.001}}}})

        res = run()
        assert not res.success
        failure = next(e for e in res.all_events if e.is_step_failure)
        assert "uploads/line1/77_test.jpg" in str(failure.event_specific_data.error)
        assert "template" in str(failure.event_specific_data.error)
        stored = "SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS WHERE batch_id = 'uploads/line1/77_test.jpg'"
        assert w.warehouse().query(stored)["n"][0] == 0
        w.upload(f"line1/77_temp{template.suffix}", template.read_bytes())
        res = run()
        assert res.success
        md = res.asset_materializations_for_node("upload_defect_logs")[0].metadata
        assert md["model_input"].value == "reference"
        assert md["template"].value == f"uploads/line1/77_temp{template.suffix}"
        assert w.warehouse().query(stored)["n"][0] == 1


def test_a_test_image_champion_never_reads_composites(reference_world):
    """The staged dataset holds composites, the champion takes board images: the held-out boards come from raw/."""
    w, _ = reference_world
    v = support.register_champion(w, map50=0.99)  # a test-image model (tiny weights) becomes champion
    assert w.registry().champion().version == v.version
    res = _heldout(w)
    assert res.success
    md = res.asset_materializations_for_node("defect_logs")[0].metadata
    assert md["model_input"].value == "test" and md["images_from"].value.startswith(RAW_PREFIX)
    paths = w.warehouse().query("SELECT image_path FROM BOARD_INSPECTIONS WHERE batch_id = 'heldout'")["image_path"]
    assert len(paths) > 0 and all(p.startswith(f"{RAW_PREFIX}/PCBData/") and p.endswith("_test.jpg") for p in paths)
