"""The defect_logs asset on Snowflake with registry-side inference (PCB_SNOWFLAKE_INFERENCE batch / service).

Stage and warehouse are the real Snowflake resources on fakesnow; the Model Registry API is the stand-in of sf_fakes
(bound to the real signatures) and run_batch is played by test_sf_inference.batch_job_player (stage paths -> bytes ->
the registered custom model's predict -> Parquet on the stage). The asset must not load the champion in the Dagster
process: rows come from the registry, are written like the in-process path's, and a re-run replaces the batch.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from sf_fakes import FakeSession
from test_sf_inference import batch_job_player, registered

from pcb_pipeline.backends.snowflake.inference import RegistryInference
from pcb_pipeline.defs.assets import DATASET_PREFIX, GOLDEN_QUERY, HELDOUT_PREFIX, RAW_PREFIX, defect_logs
from pcb_pipeline.defs.inference import champion_input_mode
from pcb_pipeline.defs.resources import RegistryResource
from pcb_pipeline.defs.snowflake_resources import SnowflakeRegistryResource, snowflake_resources

BROKEN = f"{HELDOUT_PREFIX}/zz_broken.jpg"
INFER = {"ops": {"defect_logs": {"config": {"confidence": 0.001}}}}  # a 1-epoch model is confident about nothing


@pytest.fixture
def world(fake_account, tiny_dataset, smoke_weights, tmp_path, monkeypatch):
    """Held-out boards (+ one file that is no image) on the stage, PCB_METADATA, the smoke model as CHAMPION with its
    weights and metrics.json under models/r1/ as collect_training_output leaves them."""
    from pcb_pipeline import settings
    from pcb_pipeline.backends import factory

    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))
    settings.configure()
    res = snowflake_resources()
    stage, wh = factory.stage(), factory.warehouse()  # what the resources resolve to inside a run
    stage.put_dir(tiny_dataset / "images" / "val", HELDOUT_PREFIX)
    broken = tmp_path / "zz_broken.jpg"
    broken.write_bytes(b"not an image at all")
    stage.put_file(broken, BROKEN)
    for name in ("best.pt", "best.onnx", "metrics.json"):
        stage.put_file(smoke_weights.with_name(name), f"models/r1/{name}")
    session = FakeSession()
    reg, fake, version = registered(stage, smoke_weights, session)
    assert reg.promote_if_better(version, 0.0).promoted
    fake.on_run_batch = batch_job_player(stage, tmp_path)
    boards = sorted(Path(p).stem for p in (tiny_dataset / "images" / "val").glob("*.jpg"))
    wh.upsert("PCB_METADATA", ["board_id"], pd.DataFrame(
        {"board_id": boards, "factory_line_id": ["SHANGHAI" if i % 2 else "SHENZHEN" for i in range(len(boards))]}))

    def resources(inference: str) -> dict:
        class PlayedRegistry(SnowflakeRegistryResource):  # the real adapter and RegistryInference; the API played
            def registry_factory(self):
                return lambda s: fake

            def session_factory(self):
                return lambda: nullcontext(session)

        return {"stage": res["stage"], "warehouse": res["warehouse"],
                "registry": PlayedRegistry(snowflake=res["stage"].snowflake, min_map50=0.0, inference=inference,
                                           inference_poll_interval_s=0)}

    return {"stage": stage, "wh": wh, "fake": fake, "version": version, "session": session, "registry": reg,
            "resources": resources, "boards": boards}


def _calls(w) -> list[str]:
    return [kind for kind, _ in w["fake"].get_model("PCB_DEFECT_DETECTOR").version(w["version"].version).calls]


def _png(markdown: str):
    import base64

    import cv2
    import numpy as np

    data = base64.b64decode(markdown.split("data:image/png;base64,", 1)[1].split(")", 1)[0])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _weights_fetched(fake_account) -> bool:
    return any(r.statement.startswith("GET ") and "models/r1/best." in r.statement for r in fake_account.records)


@pytest.mark.parametrize("mode, backend, calls", [
    ("batch", "snowflake run_batch", ["run_batch", "run_batch"]),
    ("service", "snowflake service", ["create_service", "run", "run"]),
])
def test_defect_logs_runs_the_champion_in_the_registry(world, fake_account, mode, backend, calls):
    w = world
    stage, wh = w["stage"], w["wh"]
    landed = {f.path: f.last_modified for f in stage.list(HELDOUT_PREFIX)}
    with dg.instance_for_test() as instance:
        first = dg.materialize([defect_logs], resources=w["resources"](mode), run_config=INFER, instance=instance)
        assert first.success
        rows_after_first = wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0]
        second = dg.materialize([defect_logs], resources=w["resources"](mode), run_config=INFER, instance=instance)
        assert second.success
        messages = [r.user_message for r in instance.all_logs(first.run_id)]

    assert _calls(w) == calls, "each run went through the registry"
    assert not _weights_fetched(fake_account), "the champion's weights were not downloaded into the Dagster process"
    if mode == "batch":
        assert "predicting" in messages, "the batch job's log lines reach the Dagster run log"

    md = {k: v.value for k, v in second.asset_materializations_for_node("defect_logs")[0].metadata.items()}
    assert md["inference_backend"] == backend
    assert md["model_version"] == f"PCB_DEFECT_DETECTOR/{w['version'].version}" and md["model_input"] == "test"
    assert md["images_from"] == HELDOUT_PREFIX
    (error,) = md["unreadable_images"]
    assert error == f"{BROKEN}: not an image (no known image format)", "reported once, with its stage path"
    assert md["images"] == len(w["boards"])

    logs = wh.query("SELECT * FROM DEFECT_LOGS")
    assert len(logs) == rows_after_first == md["detections"] > 0, "the second run replaced the batch"
    assert logs["inference_id"].is_unique and set(logs["batch_id"]) == {"heldout"}
    assert md["detections_per_class"] == logs["detected_class"].value_counts().to_dict()
    inspections = wh.query("SELECT * FROM BOARD_INSPECTIONS")
    assert sorted(inspections["board_id"]) == w["boards"] and BROKEN not in set(inspections["image_path"])
    assert set(inspections["model_version"]) == {md["model_version"]}
    assert inspections.groupby("board_id")["factory_line_id"].first().to_dict() == dict(zip(
        w["boards"], ["SHANGHAI" if i % 2 else "SHENZHEN" for i in range(len(w["boards"]))]))
    stamped = {p: pd.Timestamp(t) for p, t in zip(inspections["image_path"], inspections["timestamp"])}
    assert stamped == {p: pd.Timestamp(landed[p]).tz_convert("UTC").tz_localize(None) for p in stamped}, \
        "each inspection is stamped with when its image landed, as on the in-process path"
    golden = wh.query(GOLDEN_QUERY)
    assert dict(zip(golden.iloc[:, 0], golden.iloc[:, 1])) == (
        logs[logs.factory_line_id == "SHANGHAI"].groupby("detected_class").size().to_dict())
    preview = _png(md["preview"])
    assert preview.shape[1] == 4 * preview.shape[0], "the preview: four boards fetched from the stage"
    assert not stage.list("predictions/heldout"), "no per-board plots: the images stay on the stage"


def test_a_reference_champion_reads_boards_with_templates_from_raw(world, fake_account, tiny_dataset, tmp_path):
    """The champion's recorded input mode (metrics.json beside its weights) picks the raw boards with templates,
    still without downloading the weights; a record without input_mode falls back to the weights' stamp."""
    import json

    w = world
    stage = w["stage"]
    boards = sorted((tiny_dataset / "images" / "val").glob("*.jpg"))[:3]
    for b in boards:
        stage.put_file(b, f"{RAW_PREFIX}/PCBData/g1/{b.stem}_test.jpg")
        stage.put_file(b, f"{RAW_PREFIX}/PCBData/g1/{b.stem}_temp.jpg")
    groups = tmp_path / "groups.yaml"
    groups.write_text(yaml.safe_dump({"train": ["g0"], "val": ["g1"]}))
    stage.put_file(groups, f"{DATASET_PREFIX}/groups.yaml")
    record = json.loads(stage.get_file("models/r1/metrics.json", tmp_path / "m" / "metrics.json").read_text())
    reference = tmp_path / "reference" / "metrics.json"
    reference.parent.mkdir()
    reference.write_text(json.dumps({**record, "input_mode": "reference"}))
    stage.put_file(reference, "models/r1/metrics.json")

    res = dg.materialize([defect_logs], resources=w["resources"]("batch"), run_config=INFER)
    assert res.success
    md = {k: v.value for k, v in res.asset_materializations_for_node("defect_logs")[0].metadata.items()}
    assert md["model_input"] == "reference" and md["images_from"].startswith(RAW_PREFIX)
    assert md["unreadable_images"] == [] and md["images"] == len(boards)
    assert not _weights_fetched(fake_account)
    (_, call), = w["fake"].get_model("PCB_DEFECT_DETECTOR").version(w["version"].version).calls
    assert set(call["input_spec"].column_handling) == {"IMAGE", "TEMPLATE"}, "the job reads the templates too"
    paths = set(w["wh"].query("SELECT image_path FROM BOARD_INSPECTIONS")["image_path"])
    assert paths == {f"{RAW_PREFIX}/PCBData/g1/{b.stem}_test.jpg" for b in boards}

    # an older record without input_mode: the weights are fetched and their stamp read
    reference.write_text(json.dumps({k: v for k, v in record.items() if k != "input_mode"}))
    stage.put_file(reference, "models/r1/metrics.json")
    assert champion_input_mode(stage, w["registry"], w["version"]) == "test"
    assert _weights_fetched(fake_account)


def test_batch_inference_of_the_registry_resources():
    from dagster_snowflake import SnowflakeResource

    assert RegistryResource(tracking_uri="file:///nowhere").batch_inference() is None, "local: in the asset"
    sf = SnowflakeResource(account="a", user="u", password="p", database="PCB", schema="PIPELINE")
    assert SnowflakeRegistryResource(snowflake=sf, inference="local").batch_inference() is None
    inf = SnowflakeRegistryResource(snowflake=sf, inference="batch", inference_timeout_s=60,
                                    inference_poll_interval_s=1).batch_inference(log=print)
    assert isinstance(inf, RegistryInference) and inf.backend == "snowflake run_batch"
    assert (inf.config.mode, inf.config.timeout_s, inf.config.poll_interval_s) == ("batch", 60, 1)
    assert SnowflakeRegistryResource(snowflake=sf, inference="service").batch_inference().backend == \
        "snowflake service"
