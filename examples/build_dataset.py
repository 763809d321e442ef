"""Build a small mask-augmented dataset offline, look at a row, export it to COCO.

    python examples/build_dataset.py [--preset tiny-random]

Without ``--preset`` the model-free ``SyntheticLabeler`` labels generated clips (exact masks, instant);
with ``--preset tiny-random`` the real pipeline runs with tiny random-weight models (meaningless masks, a
few seconds). Nothing is downloaded either way.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import datasets

from segvlm.data import BuildConfig, build_dataset, to_coco, with_decoded_masks
from segvlm.testing import SyntheticLabeler, write_test_image, write_test_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="pipeline preset (e.g. tiny-random); default: synthetic")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        media = Path(folder) / "media"
        write_test_video(media / "clips" / "squares.mp4", frames=6)
        write_test_image(media / "photos" / "still.png", index=3)

        config = BuildConfig(
            query=["red square", "green square"],
            stride=2,
            caption_templates=("a {label}", "the {phrase} in the picture"),
        )
        labeler = None if args.preset else SyntheticLabeler()
        summary = build_dataset([str(media)], Path(folder) / "out", config, labeler=labeler, preset=args.preset)
        print(f"{summary.rows} rows, {summary.regions} regions, labels {summary.label_counts}")

        ds = with_decoded_masks(datasets.load_from_disk(str(summary.out)))
        row = ds[0]
        print(
            row["source"],
            row["frame_index"],
            row["image"].size,
            row["masks"].shape,
            [region["caption"] for region in row["regions"]],
        )

        coco = to_coco(ds)
        print(f"COCO export: {len(coco['images'])} images, {len(coco['annotations'])} annotations")


if __name__ == "__main__":
    main()
