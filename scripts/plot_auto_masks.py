"""The automatic brain mask (``mtsr translate --mask auto``) of every T1, T2 and FLAIR scan in the session
folders under ``--root``: one line each (time, note, share outside the head, size against the head) and a
grid of mid-slices with the mask's outline (docs/mt.md).

    python scripts/plot_auto_masks.py --root ../shared/data/open_ms_longitudinal_raw \
        --output docs/images/mt_auto_mask_contrasts_open_ms.png

A file's contrast comes from its name (``*T1W*``, ``*T2W*``, ``*FLAIR*``, as ``mtsr datalist`` reads it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SEQUENCES = ("t1", "t2", "flair")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="folder of session folders")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)

    # lazy: matplotlib, torch and MONAI load only once the arguments are read
    from mtsr_monai.data.datalist import modality_from_name
    from mtsr_monai.inference.brain_mask import auto_brain_mask
    from mtsr_monai.io import load_volume
    from mtsr_monai.reporting.views import centre_point, plane_image, pyplot, save_figure, show_plane
    from mtsr_monai.transforms.foreground import head_mask
    from mtsr_monai.transforms.intensity import display_range

    sessions = sorted(p for p in args.root.iterdir() if p.is_dir())
    plt = pyplot()
    fig, axes = plt.subplots(len(sessions), 3, figsize=(9, 3 * len(sessions)), squeeze=False)
    for row, session in enumerate(sessions):
        found = {modality_from_name(f.name.split(".nii")[0]): f for f in session.glob("*.nii*")}
        for col, sequence in enumerate(SEQUENCES):
            ax = axes[row, col]
            ax.axis("off")
            if sequence not in found:
                continue
            volume = load_volume(found[sequence])
            start = time.perf_counter()
            auto = auto_brain_mask(volume, sequence)
            seconds = time.perf_counter() - start
            line = f"{session.name} {sequence}: {seconds:.0f} s, {auto.note}"
            affine, image = np.asarray(volume.affine), volume.numpy()
            if auto.mask is not None:
                head = head_mask(image, classes=3)
                outside = (auto.mask & ~head).sum() / auto.mask.sum()
                line += f"; outside the head {outside:.2f}, mask / head {auto.mask.sum() / head.sum():.2f}"
            print(line, flush=True)
            point = centre_point(auto.mask if auto.mask is not None else image > 0, affine)
            vmin, vmax = display_range(image)
            show_plane(ax, image, affine, "axial", point, vmin=vmin, vmax=vmax)
            if auto.mask is not None:
                outline = plane_image(auto.mask.astype(np.uint8), affine, "axial", point)[0]
                ax.contour(outline, [0.5], colors="red", linewidths=0.8)
            missing = " (no mask)" if auto.mask is None else ""
            ax.set_title(f"{session.name} {sequence}{missing}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.output, dpi=80)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
