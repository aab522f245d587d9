"""Upload-sensor stress test: 1,000 uploads in bursts, with hazards and sensor restarts; counts missed/duplicated.

    .venv/bin/python bench/sensor_stress.py [--uploads 1000] [--seed 0] [--json]

The real `upload_sensor` (pcb_pipeline.defs.sensors) runs against a real local stage directory and a real Dagster
instance (sqlite, temporary). Each tick is evaluated as the daemon does (`SensorDefinition.evaluate_tick`) and then
"launched" the way the daemon launches: dynamic partitions are added, and a run is created for each run request unless
a run with that run key already exists (Dagster's run-key guarantee). Runs are recorded, not executed: this measures
the sensor's bookkeeping, not inference.

Workload (seeded): `uploads` valid uploads whose every (path, content) must run exactly once, written by
- atomic writers (hidden temp + rename, as the app's stage.put_file does),
- visible-temp writers (`<name>.part`, renamed later: the temp name is seen by a tick),
- slow non-atomic writers (half the bytes, a tick, then the rest),
- late writers (last_modified back-dated 2 h: older than the cursor's lookback window),
- re-uploads of an already processed path with new content (a new version: must run again),
arriving in bursts of 1-120 files, plus hazards that must NOT run: zero-byte files, non-image suffixes, text saved
as .jpg, byte-identical copies under another name, re-puts of the same bytes at the same path, abandoned `.part`
files. Between ticks the daemon is restarted (a new sensor definition, cursor from storage), sometimes "crashes"
after launching a tick's runs but before storing its cursor (the next tick sees the stale cursor), and once the
cursor is reset to nothing.

Reported: missed (valid uploads never launched), duplicated (a (path, content) launched twice, or the same content
launched under two names), unexpected launches (hazards or half-written content), re-emitted requests (asked again by
the sensor, refused by the run-key check), wall time, ticks, tick duration, upload->launch latency, cursor size.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _jpeg(rng: random.Random, size: int = 48) -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.frombuffer(rng.randbytes(size * size * 3), dtype=np.uint8).reshape(size, size, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def run_stress(workdir: Path, uploads: int = 1000, seed: int = 0, settle_s: float = 0.15, stable_s: float = 0.5,
               lookback_s: float = 3.0, max_runs_per_tick: int = 60, verbose: bool = False) -> dict:
    from pcb_pipeline import settings

    settings.configure(Path(os.environ.get("PCB_HOME") or workdir / "home"))
    import dagster as dg

    from pcb_pipeline.backends.local import LocalStage
    from pcb_pipeline.defs.resources import RegistryResource, StageResource, WarehouseResource
    from pcb_pipeline.defs.sensors import (CONTENT_TAG, PARTITION_TAG, RUN_KEY_TAG, UPLOAD_SENSOR_NAME, UploadCursor,
                                           UploadSensorSettings, build_upload_sensor)

    import logging

    logging.getLogger("dagster").setLevel(logging.ERROR if not verbose else logging.INFO)
    rng = random.Random(seed)
    stage_root = workdir / "stage"
    st = LocalStage(stage_root)
    up = stage_root / "uploads"
    up.mkdir(parents=True, exist_ok=True)
    scratch = workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    s = UploadSensorSettings(settle_s=settle_s, stable_s=stable_s, lookback_s=lookback_s,
                             max_runs_per_tick=max_runs_per_tick, interval_s=1, wait_for_champion=False)
    resources = {"stage": StageResource(root=str(stage_root)), "registry": RegistryResource(tracking_uri="sqlite://")}

    expected: dict[str, float] = {}  # run key (path@md5) -> time the upload was complete
    hazards: dict[str, str] = {}  # stage key -> kind (must never run)
    launched_at: dict[str, float] = {}
    launched: list[str] = []
    launched_md5: dict[str, list[str]] = {}
    reemitted = 0
    stats = {"ticks": 0, "restarts": 0, "crashes": 0, "cursor_resets": 0, "tick_s": [], "eval_s": [],
             "cursor_bytes": []}
    pending_slow: list[tuple[Path, bytes]] = []
    pending_rename: list[tuple[Path, Path]] = []
    names = iter(range(10**9))
    writers = {"atomic": 0, "visible_temp": 0, "slow_non_atomic": 0, "late_backdated": 0, "new_version": 0}
    hazard_kinds: dict[str, int] = {}

    def key_of(p: Path) -> str:
        return p.relative_to(up).as_posix()

    def atomic(name: str, data: bytes, mtime: float | None = None) -> Path:
        local = scratch / "x"
        local.write_bytes(data)
        path = Path(st.path(st.put_file(local, f"uploads/{name}")))
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    latest: dict[str, str] = {}  # key -> run key of its newest content

    def expect(path: Path, data: bytes, when: float | None = None) -> None:
        rk = f"{key_of(path)}@{hashlib.md5(data).hexdigest()}"
        expected[rk] = time.time() if when is None else when
        latest[key_of(path)] = rk

    def processed_keys(exclude: set[str]) -> list[str]:
        done = set(launched)
        return [k for k, rk in latest.items() if rk in done and k not in exclude]

    from pcb_pipeline.defs.assets import upload_defect_logs
    from pcb_pipeline.defs.jobs import upload_inference_job

    with dg.instance_for_test() as instance:
        sensor = build_upload_sensor(s)
        defs = dg.Definitions(assets=[upload_defect_logs], jobs=[upload_inference_job], sensors=[sensor],
                              resources={**resources, "warehouse": WarehouseResource(path=str(workdir / "wh.duckdb"))})
        repo = defs.get_repository_def()
        cursor: str | None = None

        def tick() -> int:
            nonlocal cursor, sensor, reemitted
            if rng.random() < 0.3:  # daemon restart: a fresh sensor object, cursor from storage
                sensor = build_upload_sensor(s)
                stats["restarts"] += 1
            t0 = time.perf_counter()
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                          sensor_name=UPLOAD_SENSOR_NAME, repository_def=repo,
                                          instance_ref=instance.get_ref())
            data = sensor.evaluate_tick(ctx)  # resolves partitions through the context's instance
            stats["eval_s"].append(time.perf_counter() - t0)
            for req in data.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            n = 0
            for rr in data.run_requests or []:
                if instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: rr.run_key})):
                    reemitted += 1  # the daemon skips it: a run with this key exists
                    continue
                instance.add_run(dg.DagsterRun(job_name="upload_inference_job",
                                               tags={**rr.tags, RUN_KEY_TAG: rr.run_key, PARTITION_TAG: rr.partition_key,
                                                     "dagster/sensor_name": UPLOAD_SENSOR_NAME}))
                launched.append(rr.run_key)
                launched_at.setdefault(rr.run_key, time.time())
                launched_md5.setdefault(rr.tags[CONTENT_TAG], []).append(rr.run_key)
                n += 1
            stats["tick_s"].append(time.perf_counter() - t0)
            stats["ticks"] += 1
            if data.cursor is not None:
                stats["cursor_bytes"].append(len(data.cursor))
            if rng.random() < 0.2:  # crash after launching, before the cursor was stored
                stats["crashes"] += 1
            else:
                cursor = data.cursor if data.cursor is not None else cursor
            return n

        started = time.time()
        written = 0
        reset_done = False
        while written < uploads:
            burst = min(uploads - written, rng.randint(1, 120))
            touched: set[str] = set()  # keys written in this burst: not yet processed, so not re-used below
            for _ in range(burst):
                i = next(names)
                data = _jpeg(rng)
                kind = rng.random()
                name = f"line{i % 4}/board_{i:05d}.jpg" if rng.random() < 0.5 else f"board_{i:05d}.jpg"
                done = processed_keys(touched)
                touched.add(name)
                if kind < 0.70:
                    expect(atomic(name, data), data)
                    writers["atomic"] += 1
                elif kind < 0.80:
                    writers["visible_temp"] += 1  # visible temp name, renamed after the next tick
                    final = up / name
                    tmp = final.with_name(final.name + ".part")
                    tmp.parent.mkdir(parents=True, exist_ok=True)
                    tmp.write_bytes(data)
                    pending_rename.append((tmp, final))
                    expect(final, data, float("inf"))
                elif kind < 0.88:  # slow, non-atomic: half now, the rest after the next tick
                    writers["slow_non_atomic"] += 1
                    final = up / name
                    final.parent.mkdir(parents=True, exist_ok=True)
                    with open(final, "wb") as fh:
                        fh.write(data[: len(data) // 2])
                    pending_slow.append((final, data))
                    expect(final, data, float("inf"))
                elif kind < 0.94:  # late: back-dated past the lookback window
                    expect(atomic(name, data, mtime=time.time() - 7200), data)
                    writers["late_backdated"] += 1
                elif done:  # a new version of an already processed file
                    key = rng.choice(done)
                    touched.add(key)
                    expect(atomic(key, data), data)
                    writers["new_version"] += 1
                else:
                    expect(atomic(name, data), data)
                    writers["atomic"] += 1
                written += 1
            # hazards, ~12% of the traffic
            for _ in range(max(1, burst // 8)):
                i = next(names)
                h = rng.random()
                done = processed_keys(touched)
                if h < 0.2:
                    hazards[f"empty_{i}.jpg"] = "zero-byte"
                    atomic(f"empty_{i}.jpg", b"")
                elif h < 0.35:
                    hazards[f"notes_{i}.txt"] = "not an image (suffix)"
                    atomic(f"notes_{i}.txt", b"operator notes")
                elif h < 0.5:
                    hazards[f"fake_{i}.jpg"] = "not an image (content)"
                    atomic(f"fake_{i}.jpg", b"this is not a jpeg" * 10)
                elif h < 0.65:
                    hazards[f"stale_{i}.jpg.part"] = "abandoned temp file"
                    atomic(f"stale_{i}.jpg.part", _jpeg(rng))
                elif done:
                    src_key = rng.choice(done)
                    touched.add(src_key)
                    content = (up / src_key).read_bytes()
                    if h < 0.85:
                        hazards[f"copy_{i}.jpg"] = "duplicate content under another name"
                        atomic(f"copy_{i}.jpg", content)
                    else:  # same bytes re-put at the same path: must not run again
                        atomic(src_key, content)
                        hazard_kinds["same bytes re-put at the same path"] = \
                            hazard_kinds.get("same bytes re-put at the same path", 0) + 1
            for _ in range(rng.randint(1, 3)):
                tick()
                for final, data in pending_slow:
                    with open(final, "ab") as fh:
                        fh.write(data[len(data) // 2:])
                    expect(final, data)
                pending_slow.clear()
                for tmp, final in pending_rename:
                    os.replace(tmp, final)
                    expect(final, final.read_bytes())
                pending_rename.clear()
                time.sleep(rng.uniform(0.0, 0.12))
            if not reset_done and written >= uploads // 2:
                cursor = None  # an operator resets the sensor's cursor
                stats["cursor_resets"] += 1
                reset_done = True
        # drain: tick until everything settled and two quiet ticks in a row
        quiet = 0
        drain_deadline = time.time() + 60
        while quiet < 2 and time.time() < drain_deadline:
            time.sleep(stable_s + 0.05)
            quiet = quiet + 1 if tick() == 0 else 0
        wall = time.time() - started
        final_cursor = UploadCursor.loads(cursor) if cursor else UploadCursor()

    launched_set = set(launched)
    missed = sorted(set(expected) - launched_set)
    unexpected = sorted(launched_set - set(expected))
    duplicated_keys = len(launched) - len(launched_set)
    duplicated_content = sum(len(set(k.split("@")[0] for k in v)) - 1 for v in launched_md5.values())
    hazard_launched = sorted(k for k in launched_set if k.split("@")[0] in hazards)
    latencies = [launched_at[k] - t for k, t in expected.items() if k in launched_at and t != float("inf")]
    unreported = sorted(k for k in hazards if (up / k).exists() and not (
        k in final_cursor.seen and final_cursor.seen[k][2] == "r"))
    result = {
        "uploads": uploads, "expected_runs": len(expected), "launched_runs": len(launched),
        "writers": writers,
        "hazard_kinds": {**{k: list(hazards.values()).count(k) for k in sorted(set(hazards.values()))},
                         **hazard_kinds},
        "missed": len(missed), "duplicated": duplicated_keys + duplicated_content,
        "unexpected": len(unexpected), "hazards": len(hazards), "hazards_launched": len(hazard_launched),
        "hazards_not_marked_rejected_in_cursor": len(unreported),
        "reemitted_requests_refused_by_run_key": reemitted,
        "ticks": stats["ticks"], "restarts": stats["restarts"], "crashes_with_stale_cursor": stats["crashes"],
        "cursor_resets": stats["cursor_resets"],
        "wall_s": round(wall, 2),
        "sensor_eval_ms_mean": round(1000 * statistics.mean(stats["eval_s"]), 1),
        "sensor_eval_ms_max": round(1000 * max(stats["eval_s"]), 1),
        "tick_with_launches_ms_mean": round(1000 * statistics.mean(stats["tick_s"]), 1),
        "latency_s_median": round(statistics.median(latencies), 2) if latencies else None,
        "latency_s_p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
        "cursor_bytes_max": max(stats["cursor_bytes"]) if stats["cursor_bytes"] else 0,
        "cursor_bytes_final": len(cursor or ""),
        "settings": {"settle_s": settle_s, "stable_s": stable_s, "lookback_s": lookback_s,
                     "max_runs_per_tick": max_runs_per_tick},
        "examples": {"missed": missed[:5], "unexpected": unexpected[:5], "unreported": unreported[:5]},
    }
    if verbose:
        print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sensor-stress-") as tmp:
        os.environ.setdefault("PCB_HOME", str(Path(tmp) / "home"))
        r = run_stress(Path(tmp), uploads=args.uploads, seed=args.seed)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{r['uploads']} uploads ({r['expected_runs']} expected runs incl. re-uploads), {r['hazards']} hazards, "
              f"{r['ticks']} ticks, {r['restarts']} restarts, {r['crashes_with_stale_cursor']} stale-cursor crashes, "
              f"{r['cursor_resets']} cursor reset")
        print(f"missed {r['missed']}  duplicated {r['duplicated']}  unexpected {r['unexpected']}  "
              f"hazards launched {r['hazards_launched']}  re-emitted (refused by run key) "
              f"{r['reemitted_requests_refused_by_run_key']}")
        print(f"wall {r['wall_s']} s; sensor evaluation mean {r['sensor_eval_ms_mean']} ms, max "
              f"{r['sensor_eval_ms_max']} ms; upload->launch "
              f"median {r['latency_s_median']} s, p95 {r['latency_s_p95']} s; cursor max {r['cursor_bytes_max']} B")
    return 0 if r["missed"] == 0 and r["duplicated"] == 0 and r["unexpected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
