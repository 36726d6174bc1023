"""Writes tests/reference/vectors3: reference values and gradients for the shape-aware losses of
issue 23 on the inputs vectors2 does not cover (3-D volumes, classes absent from a sample, a
single sigmoid channel, anisotropic spacing, other k), computed in float64 by MONAI 1.6.1,
PyTorch and SciPy (the nnU-Net and Kervadec formulas are written out below; they are a few
lines each). Run with a Python that has torch, monai==1.6.1 and scipy:

    python tests/reference/vectors3/generate.py

Layout and contract: as tests/reference/README.md describes for `vectors/`.
"""

import json
import pathlib

import monai
import numpy as np
import scipy
import torch
from monai.losses import DiceFocalLoss, HausdorffDTLoss, SoftclDiceLoss, SoftDiceclDiceLoss
from scipy.ndimage import distance_transform_edt

HERE = pathlib.Path(__file__).parent
rng = np.random.default_rng(23)


def blobs(n, classes, spatial, absent=()):
    """Class-index targets: background with one blob per foreground class; `absent` lists
    (sample, class) pairs left out."""
    target = np.zeros((n, *spatial), dtype=np.int64)
    grid = np.indices(spatial).astype(np.float64)
    for sample in range(n):
        for c in range(1, classes):
            if (sample, c) in absent:
                continue
            centre = [rng.uniform(0, s) for s in spatial]
            radius = rng.uniform(1.5, max(2.0, min(spatial) / 3))
            inside = sum((g - x) ** 2 for g, x in zip(grid, centre)) <= radius**2
            target[sample][inside] = c
    return target


def logits(n, classes, spatial):
    return (rng.standard_normal((n, classes, *spatial)) * 2.0).astype(np.float32)


def one_hot(target, classes):
    return torch.nn.functional.one_hot(torch.from_numpy(target), classes).movedim(-1, 1).double()


def boundary_value(x, target, include_background, spacing):
    """Kervadec's surface loss: mean over (n, counted c, positions) of softmax · one_hot2dist."""
    p = torch.softmax(x, 1)
    classes = x.shape[1]
    maps = np.zeros(x.shape)
    for n in range(x.shape[0]):
        for c in range(classes):
            pos = target[n] == c
            if pos.any() and not pos.all():
                neg = ~pos
                maps[n, c] = (
                    distance_transform_edt(neg, sampling=spacing) * neg
                    - (distance_transform_edt(pos, sampling=spacing) - 1) * pos
                )
    first = 0 if include_background else 1
    return (p[:, first:] * torch.from_numpy(maps[:, first:])).mean()


def topk_value(x, target, k, weights=None):
    """nnU-Net's TopKLoss: cross-entropy per position (reduction none), mean of the largest
    int(M·k/100)."""
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    res = torch.nn.functional.cross_entropy(x, torch.from_numpy(target), weight=weight, reduction="none")
    count = int(np.prod(res.shape, dtype=np.int64) * k / 100)
    values, _ = torch.topk(res.view((-1,)), count, sorted=False)
    return values.mean()


CASES = []


def case(case_id, config, x, target, compute, reference, reduction="mean"):
    folder = HERE / case_id
    folder.mkdir(exist_ok=True)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    value = compute(xt)
    value.backward()
    np.save(folder / "output.npy", x)
    np.save(folder / "target.npy", target)
    np.save(folder / "grad.npy", xt.grad.numpy().astype(np.float32))
    CASES.append(
        {
            "id": case_id,
            "loss": config,
            "reduction": reduction,
            "expected": float(value),
            "reference": reference,
            "note": "",
            "output_shape": list(x.shape),
        }
    )


def monai_case(case_id, config, x, target, loss, reference, sigmoid=False, reduction="mean"):
    classes = x.shape[1]

    def compute(xt):
        if sigmoid:
            y = torch.from_numpy(target).double().unsqueeze(1)
        else:
            y = one_hot(target, classes)
        return loss(xt, y)

    case(case_id, config, x, target, compute, reference, reduction)


def main():
    # Hausdorff DT: a 3-D volume, and a 2-D batch where sample 0 lacks class 2.
    x, t = logits(2, 3, (6, 8, 10)), blobs(2, 3, (6, 8, 10))
    monai_case("hausdorff_dt_3d", {"name": "hausdorff_dt"}, x, t,
               HausdorffDTLoss(alpha=2.0, include_background=False, softmax=True),
               "monai HausdorffDTLoss(alpha=2, include_background=False, softmax) on one-hot targets, 3-D")
    x, t = logits(2, 3, (12, 9)), blobs(2, 3, (12, 9), absent={(0, 2)})
    monai_case("hausdorff_dt_empty_class", {"name": "hausdorff_dt", "alpha": 1.0, "include_background": True},
               x, t, HausdorffDTLoss(alpha=1.0, include_background=True, softmax=True),
               "monai HausdorffDTLoss(alpha=1, include_background=True, softmax); class 2 absent from sample 0")
    x, t = logits(3, 1, (10, 11)), blobs(3, 2, (10, 11), absent={(1, 1)})
    monai_case("hausdorff_dt_sigmoid_one_channel", {"name": "hausdorff_dt", "activation": "sigmoid"}, x, t,
               HausdorffDTLoss(alpha=2.0, sigmoid=True), "monai HausdorffDTLoss(sigmoid) on a [N, 1, H, W] binary mask; sample 1 empty",
               sigmoid=True)

    x, t = logits(3, 3, (9, 12)), blobs(3, 3, (9, 12))
    monai_case("hausdorff_dt_sum", {"name": "hausdorff_dt"}, x, t,
               HausdorffDTLoss(include_background=False, softmax=True, reduction="sum"),
               "monai HausdorffDTLoss(softmax, reduction='sum'): the sum of the per-(sample, class) means",
               reduction="sum")
    x, t = logits(3, 3, (9, 12)), blobs(3, 3, (9, 12), absent={(2, 1)})
    monai_case("hausdorff_dt_batch_sum", {"name": "hausdorff_dt", "batch": True}, x, t,
               HausdorffDTLoss(include_background=False, softmax=True, batch=True, reduction="sum"),
               "monai HausdorffDTLoss(softmax, batch=True, reduction='sum'): per-class means over the batch, summed",
               reduction="sum")

    # clDice: 3-D, and 2-D without the background with an empty class.
    x, t = logits(2, 3, (7, 9, 8)), blobs(2, 3, (7, 9, 8))
    monai_case("soft_cldice_3d", {"name": "soft_cldice"}, x, t, SoftclDiceLoss(iter_=3, softmax=True),
               "monai 1.6.1 SoftclDiceLoss(iter_=3, softmax=True) on one-hot targets, 3-D")
    x, t = logits(2, 4, (14, 12)), blobs(2, 4, (14, 12), absent={(0, 3), (1, 1)})
    monai_case("soft_cldice_no_background", {"name": "soft_cldice", "include_background": False, "iterations": 5},
               x, t, SoftclDiceLoss(iter_=5, softmax=True, include_background=False),
               "monai 1.6.1 SoftclDiceLoss(iter_=5, softmax, include_background=False); empty classes")
    x, t = logits(2, 3, (6, 10, 9)), blobs(2, 3, (6, 10, 9), absent={(1, 2)})
    monai_case("dice_cldice_3d", {"name": "dice_cldice", "alpha": 0.3}, x, t,
               SoftDiceclDiceLoss(iter_=3, alpha=0.3, softmax=True),
               "monai 1.6.1 SoftDiceclDiceLoss(iter_=3, alpha=0.3, softmax=True), 3-D; class 2 absent from sample 1")

    # Dice + focal in 3-D with an empty class.
    x, t = logits(2, 3, (5, 7, 6)), blobs(2, 3, (5, 7, 6), absent={(0, 1)})
    monai_case("dice_focal_3d", {"name": "dice_focal"}, x, t, DiceFocalLoss(softmax=True),
               "monai DiceFocalLoss(softmax=True) on one-hot targets, 3-D; class 1 absent from sample 0")

    # Boundary (Kervadec, SciPy's exact transform): 3-D, background included, anisotropic.
    x, t = logits(2, 3, (6, 9, 7)), blobs(2, 3, (6, 9, 7), absent={(1, 1)})
    case("boundary_3d", {"name": "boundary"}, x, t,
         lambda xt: boundary_value(xt, t, False, None),
         "Kervadec surface loss, one_hot2dist with scipy distance_transform_edt, 3-D; class 1 absent from sample 1")
    x, t = logits(2, 3, (13, 10)), blobs(2, 3, (13, 10))
    case("boundary_spacing", {"name": "boundary", "include_background": True, "spacing": [2.5, 0.5]}, x, t,
         lambda xt: boundary_value(xt, t, True, (2.5, 0.5)),
         "Kervadec surface loss with sampling=(2.5, 0.5), background included")

    # TopK: other k, weights, 3-D.
    x, t = logits(2, 3, (4, 6, 5)), blobs(2, 3, (4, 6, 5))
    case("topk_cross_entropy_3d", {"name": "topk_cross_entropy", "k": 25.0, "weights": [0.5, 1.0, 2.0]}, x, t,
         lambda xt: topk_value(xt, t, 25.0, [0.5, 1.0, 2.0]),
         "nnU-Net TopKLoss(k=25, weight=[0.5, 1, 2]) = mean of the largest int(M*k/100) weighted per-voxel CEs, 3-D")

    meta = {
        "generated_with": {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "scipy": scipy.__version__,
            "seed": 23,
        },
        "cases": CASES,
    }
    (HERE / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    main()
