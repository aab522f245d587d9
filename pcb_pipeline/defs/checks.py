"""Asset checks: the dataset is sound before anyone trains on it."""

import dagster as dg

from pcb_pipeline.core import yolo_format
from pcb_pipeline.core.stage_layout import DATASET_PREFIX
from pcb_pipeline.defs.assets import yolo_dataset
from pcb_pipeline.defs.resources import StageProvider
from pcb_pipeline.defs.scratch import scratch_dir


def download_dataset(st):
    """The staged YOLO dataset, downloaded for the checks."""
    return st.get_dir(DATASET_PREFIX, scratch_dir("dataset_check") / "dataset")


def _label_problems(dataset_dir) -> list[str]:
    problems = []
    for f in sorted((dataset_dir / "labels").rglob("*.txt")):
        try:
            yolo_format.parse_yolo_label_file(f)
        except yolo_format.YoloLabelError as e:
            problems.append(str(e))
    return problems


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("labels_valid", asset=yolo_dataset, blocking=True,
                          description="every box has a valid class id and lies inside the unit square"),
        dg.AssetCheckSpec("no_split_leakage", asset=yolo_dataset, blocking=True,
                          description="no board group and no image on both sides of the train/val split"),
        dg.AssetCheckSpec("every_image_labelled", asset=yolo_dataset,
                          description="each image has a label file (empty = defect-free board)"),
    ]
)
def yolo_dataset_checks(stage: StageProvider):
    dataset = download_dataset(stage.get())
    problems = _label_problems(dataset)
    yield dg.AssetCheckResult(check_name="labels_valid", passed=not problems,
                              metadata={"problems": dg.MetadataValue.json(problems[:20]), "count": len(problems)})
    leak = yolo_format.split_leakage(dataset)
    yield dg.AssetCheckResult(check_name="no_split_leakage", passed=not (leak["groups"] or leak["images"]),
                              metadata={"leaked_groups": dg.MetadataValue.json(leak["groups"]),
                                        "leaked_images": len(leak["images"])})
    missing = [p.name for p in (dataset / "images").rglob(yolo_format.IMAGE_GLOB)
               if not (dataset / "labels" / p.parent.name / f"{p.stem}.txt").is_file()]
    yield dg.AssetCheckResult(check_name="every_image_labelled", passed=not missing,
                              metadata={"unlabelled": dg.MetadataValue.json(missing[:20])})


checks = [yolo_dataset_checks]
