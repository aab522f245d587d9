"""Dataset conversion: ``core.yolo_format.write_yolo_dataset`` on the real 1000 Deep PCB pairs vs a plain copy.

    .venv/bin/python bench/bench_convert.py [--deeppcb-root ../shared/deeppcb] [--reps 5] [--out-dir DIR]

Variants, interleaved rep by rep (rotated order), each writing into a fresh folder under ``--out-dir`` (default: a
temporary folder on the file system of the repository, which on the dev box is the one holding ../shared):
- ``write_yolo_dataset``: group split (train/val), labels parsed and validated, YOLO label files, data.yaml; images
  hard-linked (same file system);
- ``write_yolo_dataset_copy``: the same with hard links unavailable (``os.link`` raising), so every image is copied,
  as it is across file systems;
- ``copytree``: ``shutil.copytree`` of the whole Deep PCB folder (test images, templates, labels: 3003 files, 83 MB);
- ``copytree_test_images``: ``shutil.copy2`` of just the 1000 test images plus the 1000 label files (the files the
  conversion touches).
The source files are read once before timing (page cache warm for every variant). Without ``--sync`` a timing ends
when the files are written to the page cache, as a user waits for it. Medians over reps.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from pcb_pipeline.core import deeppcb, yolo_format

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deeppcb-root", default=str(ROOT.parent / "shared" / "deeppcb"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out-dir", default=None)
    p.add_argument("--sync", action="store_true", help="include os.sync() in each timing (data on disk)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    src = Path(args.deeppcb_root)
    samples = deeppcb.read_split(deeppcb.split_file_path(src))
    train, val = deeppcb.group_split(samples)
    base = Path(tempfile.mkdtemp(prefix="pcb-bench-convert-", dir=args.out_dir or str(ROOT / ".pcb_home")))
    for f in src.rglob("*"):  # warm the page cache for everyone
        if f.is_file():
            f.read_bytes()

    def convert(dst: Path):
        yolo_format.write_yolo_dataset({"train": train, "val": val}, dst)

    def convert_copy(dst: Path):
        with mock.patch("os.link", side_effect=OSError("cross-device link (simulated)")):
            convert(dst)

    def copytree(dst: Path):
        shutil.copytree(src, dst)

    def copy_used(dst: Path):
        (dst / "images").mkdir(parents=True)
        (dst / "labels").mkdir()
        for s in samples:
            shutil.copy2(s.test_image, dst / "images" / f"{s.image_id}.jpg")
            shutil.copy2(s.label_file, dst / "labels" / f"{s.image_id}.txt")

    variants = {"write_yolo_dataset": convert, "write_yolo_dataset_copy": convert_copy, "copytree": copytree,
                "copytree_test_images": copy_used}
    names = list(variants)
    times = {k: [] for k in names}
    load = [os.getloadavg()[0]]
    for rep in range(args.reps):
        for k in names[rep % len(names):] + names[: rep % len(names)]:
            dst = base / f"{k}_{rep}"
            t = time.perf_counter()
            variants[k](dst)
            if args.sync:
                os.sync()
            times[k].append(time.perf_counter() - t)
            shutil.rmtree(dst)
        load.append(os.getloadavg()[0])
    shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "bench": "dataset conversion vs plain file copy (1000 real Deep PCB pairs)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_convert.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count()}, "loadavg_1m_during": [round(x, 2) for x in load],
        "pairs": len(samples), "train": len(train), "val": len(val), "reps": args.reps,
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_over_copytree": {k: round(v / med["copytree"], 3) for k, v in med.items()},
        "ratio_over_copy_of_used_files": {k: round(v / med["copytree_test_images"], 3) for k, v in med.items()},
        "synced": args.sync,
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
