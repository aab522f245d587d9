"""Pack the Deep PCB trainval split compactly for the GPU machine (which receives only the repo and carried paths).

    .venv/bin/python bench/gpu_pack_data.py [--data ../shared/deeppcb] [--out .gpu_data/deeppcb] [--all-templates]

Writes the dataset's own layout (PCBData/trainval.txt, group folders, _not label folders) under ``--out`` (a
git-ignored folder listed in .git/info/exclude, carried by the device call), so ``read_split``/``group_split`` run
there unchanged. Everything that travels is limited to 64 MiB (repo + wheels + data), so by default it holds every
test image (about 31 MB, the detector's training and validation input) and the templates of the validation groups
only (what the AOI baseline needs to be scored on the same validation set); all templates would add about 40 MB.
Files are hard-linked from the source when possible (same file system), byte-identical copies otherwise: the
images are the original JPEGs, not re-encoded.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core.deeppcb import group_split, read_split, split_file_path  # noqa: E402
from pcb_pipeline.core.yolo_format import link_or_copy  # noqa: E402


def _place(src: Path, dst: Path) -> int:
    link_or_copy(src, dst)
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu_data" / "deeppcb")
    ap.add_argument("--all-templates", action="store_true", help="also the training groups' templates (+40 MB)")
    args = ap.parse_args(argv)

    split = split_file_path(args.data, "trainval")
    samples = read_split(split)
    _, val = group_split(samples)
    val_ids = {s.image_id for s in val}
    src_base = split.parent
    dst_base = args.out / "PCBData"
    shutil.rmtree(args.out, ignore_errors=True)
    total = _place(split, dst_base / "trainval.txt")
    n_temp = 0
    for s in samples:
        for f in (s.test_image, s.label_file):
            total += _place(f, dst_base / f.relative_to(src_base))
        if args.all_templates or s.image_id in val_ids:
            total += _place(s.template_image, dst_base / s.template_image.relative_to(src_base))
            n_temp += 1
    print(f"packed {len(samples)} test images, {len(samples)} label files and {n_temp} templates "
          f"({total / 2**20:.1f} MiB) into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
