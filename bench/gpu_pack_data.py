"""Pack the Deep PCB trainval split compactly for the GPU machine (which receives only the repo and carried paths).

    .venv/bin/python bench/gpu_pack_data.py [--data ../shared/deeppcb] [--out .gpu_data/deeppcb]

Writes the dataset's own layout (PCBData/trainval.txt, group folders, _not label folders) under ``--out`` (a
git-ignored folder listed in .git/info/exclude, carried by the device call), so ``read_split``/``group_split`` run
there unchanged. Everything that travels is limited to 64 MiB (repo + wheels + data). Test images and labels are
hard-linked from the source when possible (byte-identical copies otherwise): the original JPEGs, not re-encoded
(about 31 MB). Every template is written as a 1-bit PNG of its copper layout (``aoi.binarize``), about 4 KB against
50 KB as JPEG (all 1000 as JPEG would not fit): both users of templates binarise them first (the AOI inspector and
the reference composite of ``core.reference``), so their results are identical on either form (checked below for
every template); ``read_split`` picks up ``<id>_temp.png`` where there is no ``<id>_temp.jpg``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from pcb_pipeline.core.aoi import binarize, load_gray  # noqa: E402
from pcb_pipeline.core.deeppcb import read_split, split_file_path  # noqa: E402
from pcb_pipeline.core.yolo_format import link_or_copy  # noqa: E402


def _place(src: Path, dst: Path) -> int:
    link_or_copy(src, dst)
    return dst.stat().st_size


def _place_layout(src: Path, dst: Path) -> int:
    """The template's copper layout as a 1-bit PNG, verified to binarise back to the same mask."""
    from PIL import Image

    mask = binarize(load_gray(src))
    dst = dst.with_suffix(".png")
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(~mask).convert("1").save(dst, format="PNG", optimize=True)  # copper dark, as in the scan
    if not (binarize(cv2.imread(str(dst), cv2.IMREAD_GRAYSCALE)) == mask).all():
        raise RuntimeError(f"{dst}: the 1-bit PNG does not reproduce the template's layout")
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu_data" / "deeppcb")
    args = ap.parse_args(argv)

    split = split_file_path(args.data, "trainval")
    samples = read_split(split)
    src_base = split.parent
    dst_base = args.out / "PCBData"
    shutil.rmtree(args.out, ignore_errors=True)
    total = _place(split, dst_base / "trainval.txt")
    n_temp = 0
    for s in samples:
        for f in (s.test_image, s.label_file):
            total += _place(f, dst_base / f.relative_to(src_base))
        total += _place_layout(s.template_image, dst_base / s.template_image.relative_to(src_base))
        n_temp += 1
    print(f"packed {len(samples)} test images, {len(samples)} label files and {n_temp} templates "
          f"({total / 2**20:.1f} MiB) into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
