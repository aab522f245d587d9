from __future__ import annotations



def test_definitions_load_with_the_design_asset_names():
    from pcb_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_pcb_images", "pcb_metadata", "yolo_dataset", "trained_detector", "registered_model",
            "defect_logs", "sop_documents", "sop_corpus", "sop_search_service", "semantic_model"} <= keys
    deps = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
            for k in graph.get_all_asset_keys()}
    assert deps["yolo_dataset"] == {"raw_pcb_images"}
    assert deps["trained_detector"] == {"yolo_dataset"}
    assert deps["registered_model"] == {"trained_detector"}
    assert deps["defect_logs"] == {"registered_model", "pcb_metadata"}
    checks = {c.name for c in graph.asset_check_keys}
    assert {"labels_valid", "no_split_leakage", "every_image_labelled"} <= checks
    assert defs.resolve_job_def("pcb_pipeline_job") is not None


def test_workspace_yaml_points_at_the_definitions_module():
    import yaml

    from pcb_pipeline.settings import REPO_ROOT

    ws = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    assert ws["load_from"][0]["python_module"]["module_name"] == "pcb_pipeline.definitions"


def test_settings_switch_everything_offline(tmp_path, monkeypatch):
    from pcb_pipeline import settings

    for k in settings.OFFLINE_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))
    p = settings.configure()
    import os

    for k, v in settings.OFFLINE_ENV.items():
        assert os.environ[k] == v
    assert p.home == (tmp_path / "home").resolve() and p.stage.is_dir()
    assert "enabled: false" in (p.dagster_home / "dagster.yaml").read_text()
    assert (p.yolo_config / "Ultralytics" / "Arial.ttf").stat().st_size > 10_000
