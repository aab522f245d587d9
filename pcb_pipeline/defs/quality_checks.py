"""Checks beyond the dataset's: the model gate, DEFECT_LOGS integrity, and freshness of the champion and the logs.

- `model_gate` (blocking) on registered_model: a champion exists, it clears the promotion threshold, and no rejected
  candidate is champion. Downstream inference in the same run does not start when it fails.
- `champion_fresh`, `retrain_recent` (warn) on registered_model; `logs_fresh` (warn) on defect_logs. They also run on
  their own every hour (`freshness_checks_job` / `freshness_checks_schedule` in jobs.py / schedules.py).
- DEFECT_LOGS checks on defect_logs (whole table) and on upload_defect_logs (the partition's batch): unique inference
  ids, confidence in [0, 1], boxes inside the image, valid classes. SQL is Snowflake dialect (both backends).

Thresholds come from the environment, read when a check runs (backends.factory.QualitySettings; a bad value fails the
check naming the variable): PCB_CHAMPION_MAX_AGE_HOURS (default 168), PCB_RETRAIN_MAX_AGE_HOURS (26),
PCB_LOGS_MAX_AGE_HOURS (24).
"""

import time
from datetime import datetime, timezone

import dagster as dg

from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.backends.factory import QualitySettings
from pcb_pipeline.backends.locks import retry_on_lock
from pcb_pipeline.defs.assets import defect_logs, registered_model, upload_defect_logs
from pcb_pipeline.defs.resources import RegistryProvider, WarehouseProvider

PARTITION_TAG = "dagster/partition"


# ------------------------------------------------------------------------------------------------ model gate
def _meta_value(metadata, key, default=None):
    v = metadata.get(key)
    return default if v is None else getattr(v, "value", v)


def _latest_registration(instance) -> dict | None:
    """The latest registered_model materialisation's decision: version, promoted, reason, timestamp."""
    event = instance.get_latest_materialization_event(registered_model.key)
    if event is None or event.asset_materialization is None:
        return None
    md = event.asset_materialization.metadata
    return {"version": str(_meta_value(md, "version", "")), "promoted": _meta_value(md, "promoted"),
            "reason": _meta_value(md, "promotion_reason", ""), "timestamp": event.timestamp}


def gate_problems(champion, min_map50: float, latest: dict | None) -> list[str]:
    """Why the registry is not fit to serve inference (empty list: it is). Pure, for tests."""
    if champion is None:
        why = f"; the latest candidate v{latest['version']} was not promoted: {latest['reason']}" if latest else ""
        return [f"no champion model{why}"]
    problems = []
    score = champion.metrics.get("map50", float("nan"))
    if not score >= min_map50:
        problems.append(f"champion v{champion.version} mAP50 {score:.4f} is below the threshold {min_map50:.4f}")
    if latest and latest["promoted"] is False and latest["version"] == str(champion.version):
        problems.append(f"candidate v{latest['version']} was rejected ({latest['reason']}) but is champion")
    if latest and latest["promoted"] is True and latest["version"] != str(champion.version):
        problems.append(f"candidate v{latest['version']} was promoted but the champion is v{champion.version}")
    return problems


@dg.asset_check(asset=registered_model, blocking=True,
                description="the champion exists, clears the mAP50 threshold, and no rejected candidate is champion "
                            "(blocks inference downstream in the same run)")
def model_gate(context: dg.AssetCheckExecutionContext, registry: RegistryProvider) -> dg.AssetCheckResult:
    champion = registry.get().champion()
    latest = _latest_registration(context.instance)
    problems = gate_problems(champion, registry.min_map50, latest)
    return dg.AssetCheckResult(passed=not problems, metadata={
        "champion_version": champion.version if champion else "none",
        "champion_map50": dg.MetadataValue.float(champion.metrics.get("map50", float("nan")) if champion
                                                 else float("nan")),
        "min_map50": dg.MetadataValue.float(registry.min_map50),
        "latest_candidate": latest["version"] if latest else "none",
        "latest_decision": (("promoted: " if latest["promoted"] else "rejected: ") + str(latest["reason"]))
        if latest else "no registration yet",
        "problems": dg.MetadataValue.json(problems),
    })


# ------------------------------------------------------------------------------------------------ freshness
def champion_promoted_at(instance, reg, champion) -> float | None:
    """Epoch seconds when the current champion was promoted: from Dagster's history, else the registry."""
    for record in instance.fetch_materializations(registered_model.key, limit=200).records:
        md = record.asset_materialization.metadata if record.asset_materialization else {}
        if str(_meta_value(md, "version", "")) == str(champion.version) and _meta_value(md, "promoted") is True:
            return record.timestamp
    client = getattr(reg, "client", None)  # MLflow: the version's creation time
    if client is not None:
        try:
            return client.get_model_version(champion.name, champion.version).creation_timestamp / 1000
        except Exception:  # noqa: BLE001 - no age known is reported as such, below
            return None
    return None


@dg.asset_check(asset=registered_model, description="the champion was promoted within PCB_CHAMPION_MAX_AGE_HOURS "
                                                    "(default 7 days): an old champion means retraining keeps "
                                                    "failing or being rejected")
def champion_fresh(context: dg.AssetCheckExecutionContext, registry: RegistryProvider) -> dg.AssetCheckResult:
    max_age = QualitySettings.from_env().champion_max_age_hours
    reg = registry.get()
    champion = reg.champion()
    if champion is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"reason": "no champion model"})
    promoted = champion_promoted_at(context.instance, reg, champion)
    age = None if promoted is None else (time.time() - promoted) / 3600
    return dg.AssetCheckResult(passed=age is not None and age <= max_age, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"champion_version": champion.version,
                                         "champion_age_hours": dg.MetadataValue.float(age if age is not None
                                                                                      else float("nan")),
                                         "max_age_hours": dg.MetadataValue.float(max_age)})


@dg.asset_check(asset=registered_model, description="registered_model was materialised within "
                                                    "PCB_RETRAIN_MAX_AGE_HOURS (default 26): the nightly retrain ran")
def retrain_recent(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    max_age = QualitySettings.from_env().retrain_max_age_hours
    latest = _latest_registration(context.instance)
    age = None if latest is None else (time.time() - latest["timestamp"]) / 3600
    return dg.AssetCheckResult(passed=age is not None and age <= max_age, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"last_registration_hours_ago": dg.MetadataValue.float(
                                   age if age is not None else float("nan")),
                                   "max_age_hours": dg.MetadataValue.float(max_age)})


@dg.asset_check(asset=defect_logs, description="the newest inspection in BOARD_INSPECTIONS is younger than "
                                               "PCB_LOGS_MAX_AGE_HOURS (default 24)")
def logs_fresh(context: dg.AssetCheckExecutionContext, warehouse: WarehouseProvider) -> dg.AssetCheckResult:
    max_age = QualitySettings.from_env().logs_max_age_hours
    wh = retry_on_lock(warehouse.get, log=context.log.info)
    newest = retry_on_lock(wh.query, "SELECT MAX(timestamp) AS newest, COUNT(*) AS n FROM BOARD_INSPECTIONS",
                           log=context.log.info)
    ts = newest["newest"][0] if len(newest) else None
    if ts is None or str(ts) in ("NaT", "None"):
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"reason": "BOARD_INSPECTIONS is empty"})
    newest_utc = datetime.fromisoformat(str(ts)).replace(tzinfo=timezone.utc)  # TIMESTAMP_NTZ holds UTC
    age = (datetime.now(timezone.utc) - newest_utc).total_seconds() / 3600
    return dg.AssetCheckResult(passed=age <= max_age, severity=dg.AssetCheckSeverity.WARN, metadata={
        "newest_inspection": str(ts), "age_hours": dg.MetadataValue.float(age),
        "max_age_hours": dg.MetadataValue.float(max_age), "inspections": int(newest["n"][0])})


# ------------------------------------------------------------------------------------------------ DEFECT_LOGS
DEFECT_LOG_CHECKS = {
    "unique_inference_ids": "every inference_id appears once",
    "confidence_in_range": "confidence_score is in [0, 1]",
    "boxes_inside_image": "0 <= x1 <= x2 <= image_width and 0 <= y1 <= y2 <= image_height",
    "valid_classes": "class_id in 0..5 and detected_class is that class's name",
}


def sql_literal(value: str) -> str:
    """A Snowflake string literal (backslash is an escape character there, so it is doubled too)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def defect_log_problem_queries(batch_id: str | None = None) -> dict[str, str]:
    """Snowflake-dialect queries returning the offending rows, per check; scoped to one batch when given."""
    scope = f"batch_id = {sql_literal(batch_id)}" if batch_id is not None else "TRUE"
    names = " ".join(f"WHEN {i} THEN {sql_literal(n)}" for i, n in enumerate(CLASS_NAMES))
    return {
        "unique_inference_ids": f"SELECT inference_id, COUNT(*) AS copies FROM DEFECT_LOGS WHERE {scope} "
                                f"GROUP BY inference_id HAVING COUNT(*) > 1",
        "confidence_in_range": f"SELECT inference_id, confidence_score FROM DEFECT_LOGS WHERE {scope} AND NOT "
                               f"COALESCE(confidence_score >= 0 AND confidence_score <= 1, FALSE)",
        "boxes_inside_image": f"SELECT inference_id, x1, y1, x2, y2, image_width, image_height FROM DEFECT_LOGS "
                              f"WHERE {scope} AND NOT COALESCE(x1 >= 0 AND y1 >= 0 AND x1 <= x2 AND y1 <= y2 AND "
                              f"x2 <= image_width AND y2 <= image_height, FALSE)",
        "valid_classes": f"SELECT inference_id, class_id, detected_class FROM DEFECT_LOGS WHERE {scope} AND NOT "
                         f"COALESCE(class_id >= 0 AND class_id < {len(CLASS_NAMES)} AND detected_class = "
                         f"CASE class_id {names} END, FALSE)",
    }


def defect_log_problems(wh, batch_id: str | None = None) -> dict[str, list[dict]]:
    """Offending rows per DEFECT_LOGS check (empty lists: all pass)."""
    out = {}
    for name, sql in defect_log_problem_queries(batch_id).items():
        df = retry_on_lock(wh.query, sql)
        out[name] = df.astype(object).where(df.notna(), None).to_dict("records")
    return out


def build_defect_log_checks(asset, per_partition: bool):
    """The four DEFECT_LOGS checks on `asset`: the whole table, or (per_partition) the run's partition's batch."""
    specs = [dg.AssetCheckSpec(name, asset=asset, description=desc) for name, desc in DEFECT_LOG_CHECKS.items()]

    @dg.multi_asset_check(specs=specs, name=f"{asset.key.path[-1]}_table_checks")
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseProvider):
        batch = None
        if per_partition:
            from pcb_pipeline.defs.inference import partition_stage_path

            key = context.run.tags.get(PARTITION_TAG) if context.run else None
            batch = partition_stage_path(key) if key else None
        wh = retry_on_lock(warehouse.get, log=context.log.info)
        rows = int(retry_on_lock(wh.query, "SELECT COUNT(*) AS n FROM DEFECT_LOGS" + (
            f" WHERE batch_id = {sql_literal(batch)}" if batch is not None else ""))["n"][0])
        for name, bad in defect_log_problems(wh, batch).items():
            yield dg.AssetCheckResult(check_name=name, passed=not bad, metadata={
                "scope": batch or "whole table", "rows_checked": rows, "violations": len(bad),
                "examples": dg.MetadataValue.json([{k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
                                                    for k, v in r.items()} for r in bad[:10]])})

    return _checks


defect_logs_table_checks = build_defect_log_checks(defect_logs, per_partition=False)
upload_defect_logs_table_checks = build_defect_log_checks(upload_defect_logs, per_partition=True)

freshness_checks = [champion_fresh, retrain_recent, logs_fresh]
quality_checks = [model_gate, *freshness_checks, defect_logs_table_checks]  # the pcb_pipeline code location
upload_checks = [upload_defect_logs_table_checks]  # the pcb_uploads code location
