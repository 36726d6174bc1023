#!/usr/bin/env python3
"""Build small, real segmentation data sets from images bundled in scikit-image.

Usage:  python3 skimage_data.py OUT_DIR
Needs:  pip install scikit-image==0.26.0   (brings numpy, scipy, imageio, tifffile)

Only images shipped inside the scikit-image wheel are used (no network, no pooch).
The masks are *automatic* (classical image processing), not hand annotations: they
are good enough to test loaders and to train/evaluate losses on real textures, but
they are not ground truth. Output is deterministic (same bytes on every run).

Each set is written as OUT_DIR/<set>/images/<name>.<ext> + OUT_DIR/<set>/masks/<name>.png
(same stem in both folders):

nuclei            skimage.data.immunohistochemistry() (ihc.png, 512x512 RGB, brown DAB +
                  blue hematoxylin). Image = hematoxylin channel of rgb2hed (channel 0),
                  clipped to its 0.1/99.9 percentiles of the whole image and rescaled to
                  8-bit gray, so nuclei are bright on dark like a nuclear-stain
                  fluorescence image. Cut into the 4x4 grid of 128x128 tiles
                  (tile_<row>_<col>). Masks are binary 0/255 PNG.
nuclei_rgb        Same tiles and masks, images are the original 8-bit RGB ihc tiles.
nuclei16          Same as nuclei, images are 16-bit gray TIFF (.tif) using the full
                  0..65535 range; masks are 0/1 class-index 8-bit PNG.
nuclei_instances  Same images as nuclei; masks are 16-bit PNG instance labels
                  (0 = background, 1..K = nucleus id). Ids are computed on the whole
                  image (skimage.measure.label, 4-connectivity) and then tiled, so ids
                  are global (not renumbered per tile; a nucleus cut by a tile border
                  keeps its id in both tiles).
faces             skimage.data.lfw_subset() (lfw_subset.npy, 200 gray 25x25 crops): an
                  image folder for classification, faces/face/*.png (the first 100) and
                  faces/non_face/*.png (the last 100).
coins             skimage.data.coins() (303x384 gray), split at row 140 / column 170
                  into 4 quadrants of different sizes (140x170, 140x214, 163x170,
                  163x214) to exercise "sizes differ within a set". Masks are 0/1
                  class-index PNG (1 = coin).

How the nucleus mask is made (once, on the whole 512x512 image, then tiled):
  1. h = rgb2hed(ihc)[..., 0]; hs = gaussian(h, sigma=1) to suppress pixel noise.
  2. Three-class Otsu (threshold_multiotsu, classes=3) on hs gives t_low < t_high.
     The three populations are: unstained background/stroma, DAB-stained cytoplasm
     (which leaks into the hematoxylin estimate), and nuclei. A single Otsu threshold
     splits off the cytoplasm together with the nuclei (~33 % foreground, blobs over
     whole glands), hence the three-class version.
  3. Nuclei inside the brown glands are fainter than t_high, so a pixel is also
     foreground if it exceeds a local mean threshold (threshold_local, 51 px block,
     +0.005 offset) *and* t_low:  fg = (hs > t_high) | ((hs > local) & (hs > t_low)).
  4. remove_small_objects(max_size=29) (drops objects < 30 px), binary_fill_holes.
  Result: ~23 % foreground. Stroma nuclei are outlined well; densely packed gland
  nuclei are found but sometimes merged into elongated clusters.

How the coin mask is made (scikit-image tutorial "Comparing edge-based and
region-based segmentation"): elevation map = sobel(coins); markers 1 (background)
where intensity < 30 and 2 (coin) where intensity > 150; watershed of the elevation
map from those markers; coin = label 2; drop specks < 30 px; binary_fill_holes;
then split into quadrants. All 24 coins are outlined closely.
"""
import hashlib
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage import color, data, filters, measure, morphology, segmentation

TILE = 128


def nucleus_mask(h):
    hs = filters.gaussian(h, sigma=1)
    t_low, t_high = filters.threshold_multiotsu(hs, classes=3)
    local = filters.threshold_local(hs, block_size=51, offset=-0.005)
    fg = (hs > t_high) | ((hs > local) & (hs > t_low))
    fg = morphology.remove_small_objects(fg, max_size=29)
    return ndi.binary_fill_holes(fg)


def coin_mask(coins):
    elevation = filters.sobel(coins)
    markers = np.zeros_like(coins, dtype=np.uint8)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    seg = segmentation.watershed(elevation, markers)
    return ndi.binary_fill_holes(morphology.remove_small_objects(seg == 2, max_size=29))


def tiles(a):
    n = a.shape[0] // TILE
    for r in range(n):
        for c in range(a.shape[1] // TILE):
            yield f"tile_{r}_{c}", a[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]


def write(out, name, stem, image, mask, ext="png"):
    (out / name / "images").mkdir(parents=True, exist_ok=True)
    (out / name / "masks").mkdir(parents=True, exist_ok=True)
    img_path = out / name / "images" / f"{stem}.{ext}"
    if ext == "tif":
        tifffile.imwrite(img_path, image, metadata=None, software=False)
    else:
        iio.imwrite(img_path, image)
    iio.imwrite(out / name / "masks" / f"{stem}.png", mask)


def preview(path, image, mask):
    """Side by side: image | mask | image with mask outline in green (2x upscaled)."""
    rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    m = np.stack([(mask > 0).astype(np.uint8) * 255] * 3, axis=-1)
    over = rgb.copy()
    over[segmentation.find_boundaries(mask > 0)] = (0, 255, 0)
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    side = np.concatenate([rgb, gap, m, gap, over], axis=1)
    iio.imwrite(path, np.repeat(np.repeat(side, 2, axis=0), 2, axis=1))


def main(out):
    out = Path(out)
    ihc = data.immunohistochemistry()
    h = color.rgb2hed(ihc)[..., 0]
    lo, hi = np.percentile(h, [0.1, 99.9])
    unit = np.clip((h - lo) / (hi - lo), 0.0, 1.0)
    gray8 = np.round(unit * 255).astype(np.uint8)
    gray16 = np.round(unit * 65535).astype(np.uint16)
    fg = nucleus_mask(h)
    labels = measure.label(fg, connectivity=1).astype(np.uint16)
    print(f"nuclei: whole-image foreground {fg.mean():.1%}, {labels.max()} instances")

    fg8 = fg.astype(np.uint8)
    for (stem, g8), (_, g16), (_, rgb), (_, m), (_, lab) in zip(
        tiles(gray8), tiles(gray16), tiles(ihc), tiles(fg8), tiles(labels)
    ):
        write(out, "nuclei", stem, g8, m * 255)
        write(out, "nuclei_rgb", stem, rgb, m * 255)
        write(out, "nuclei16", stem, g16, m, ext="tif")
        write(out, "nuclei_instances", stem, g8, lab)
        n_ids = len(np.unique(lab)) - (lab.min() == 0)
        print(f"  {stem}: foreground {m.mean():6.1%}, {n_ids:3d} instance ids")
    preview(out / "nuclei_preview.png", gray8[:TILE, :TILE], fg8[:TILE, :TILE])
    preview(out / "nuclei_rgb_preview.png", ihc[256:384, 128:256], fg8[256:384, 128:256])

    coins = data.coins()
    cm = coin_mask(coins).astype(np.uint8)
    r0, c0 = 140, 170
    for stem, rs, cs in [("q00", slice(0, r0), slice(0, c0)), ("q01", slice(0, r0), slice(c0, None)),
                         ("q10", slice(r0, None), slice(0, c0)), ("q11", slice(r0, None), slice(c0, None))]:
        write(out, "coins", stem, coins[rs, cs], cm[rs, cs])
        print(f"coins {stem}: {coins[rs, cs].shape}, foreground {cm[rs, cs].mean():.1%}")
    preview(out / "coins_preview.png", coins, cm)

    # Classification at a size other than 28x28: skimage.data.lfw_subset() holds 200 gray
    # 25x25 crops, the first 100 faces (Labeled Faces in the Wild) and the last 100 not.
    crops = data.lfw_subset()
    for i, crop in enumerate(crops):
        folder = out / "faces" / ("face" if i < 100 else "non_face")
        folder.mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / f"{i:03d}.png", np.round(crop * 255).astype(np.uint8))
    print(f"faces: {len(crops)} crops of {crops.shape[1]}x{crops.shape[2]}")

    digest = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(out).as_posix().encode() + b"\0" + p.read_bytes())
    print(f"sha256 of all files: {digest.hexdigest()}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1])
