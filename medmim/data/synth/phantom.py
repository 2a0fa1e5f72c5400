"""One synthetic CT phantom: sample, paint, add noise, write its files and crops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medmim.data.synth.anatomy import Torso
from medmim.data.synth.canvas import Canvas
from medmim.data.synth.export import (
    cube_affine,
    sample_cube,
    save_json,
    save_nifti,
    shrink_cube,
    to_uint8,
)
from medmim.data.synth.geometry import SIZES, Geometry, sample_geometry
from medmim.data.synth.lesions import paint_nodules, paint_tumor
from medmim.data.synth.skeleton import paint_skeleton
from medmim.data.synth.tissues import LABEL_OF, PHASES

#: Classes of the OrganMNIST3D-like archive (label index -> organ).
ORGAN_CLASSES: tuple[str, ...] = (
    "liver",
    "kidney_right",
    "kidney_left",
    "heart",
    "lung_right",
    "lung_left",
    "spleen",
    "aorta",
    "spine",
)


@dataclass(frozen=True)
class PhantomOptions:
    """What to generate per phantom (see `generate_phantoms` for the meaning of each)."""

    size: str = "default"
    nodules: tuple[int, int] = (2, 4)
    p_malignant: float = 0.5
    crop_size: int = 32
    crop_spacing: float = 1.5
    organ_sizes: tuple[int, ...] = (28, 64)
    window: tuple[float, float] = (-750.0, 1750.0)


def phantom_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of phantom `index`: independent of how many phantoms are made."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def make_phantom(index: int, seed: int, out_dir: Path, opts: PhantomOptions) -> dict[str, Any]:
    """Generate, write and describe phantom `index` of a set made with `seed`.

    Returns:
        A record: name, relative file paths, meta (JSON-able), nodules (with crop paths) and
        `organ_crops` {size: (n_organs, size, size, size) uint8}, `organ_labels` (n_organs,).
    """
    rng = phantom_rng(seed, index)
    name = f"phantom_{index:04d}"
    torso = Torso(rng, str(rng.choice(PHASES)))
    geo = sample_geometry(rng, torso.lo, torso.hi, SIZES[opts.size])
    canvas = Canvas(geo.shape, geo.vox_to_anat, geo.edge, geo.nsub)
    torso.paint(canvas)
    paint_skeleton(canvas, torso)
    nodules = paint_nodules(
        canvas, torso, int(rng.integers(opts.nodules[0], opts.nodules[1] + 1)), opts.p_malignant
    )
    tumor = paint_tumor(canvas, torso)
    noise = {
        "sigma_hu": round(float(rng.uniform(8, 25)), 2),
        "correlation_vox": round(float(rng.uniform(0.5, 1.0)), 3),
    }
    canvas.add_noise(rng, noise["sigma_hu"], noise["correlation_vox"])
    hu = canvas.to_int16()
    files = {
        "image": f"images/{name}.nii.gz",
        "organs": f"labels/{name}_organs.nii.gz",
        "nodules": f"labels/{name}_nodules.nii.gz",
        "tumor": f"labels/{name}_tumor.nii.gz",
    }
    desc = f"medmim phantom seed={seed} index={index}"
    save_nifti(out_dir / files["image"], hu, geo.affine, desc)
    save_nifti(out_dir / files["organs"], canvas.label, geo.affine, desc)
    save_nifti(out_dir / files["nodules"], canvas.masks["nodules"], geo.affine, desc)
    save_nifti(out_dir / files["tumor"], canvas.masks["tumor"], geo.affine, desc)
    voxel_volume = float(np.prod(geo.spacing))
    nodule_rows = [
        _nodule_crop(out_dir, name, hu, canvas.masks["nodules"], geo, n, voxel_volume, opts)
        for n in nodules
    ]
    tumor_info = _world(geo, tumor) if tumor is not None else None
    if tumor_info is not None:
        tumor_info["volume_mm3"] = round(float(canvas.masks["tumor"].sum()) * voxel_volume, 1)
    crops, labels = _organ_crops(hu, canvas.label, geo.affine, opts)
    meta = {
        "name": name,
        "seed": seed,
        "index": index,
        "size": opts.size,
        "phase": torso.phase,
        "shape": list(geo.shape),
        "spacing": [round(float(s), 4) for s in geo.spacing],
        "orientation": geo.orientation,
        "tilt_deg": round(geo.tilt_deg, 3),
        "affine": geo.affine.tolist(),
        "pose": np.round(geo.pose, 6).tolist(),
        "slice_supersampling": geo.nsub,
        "edge_mm": round(geo.edge, 3),
        "noise": noise,
        "habitus": np.round(torso.s, 4).tolist(),
        "fat_mm": round(float(torso.t_fat), 2),
        "tissue_hu": {k: round(v, 1) for k, v in torso.hu.items()},
        "files": files,
        "nodules": nodule_rows,
        "tumor": tumor_info,
    }
    save_json(out_dir / "meta" / f"{name}.json", meta)
    return {
        "name": name,
        "files": files,
        "meta": meta,
        "nodules": nodule_rows,
        "tumor": tumor_info,
        "organ_crops": crops,
        "organ_labels": labels,
    }


def _world(geo: Geometry, lesion: dict[str, Any]) -> dict[str, Any]:
    """Replace a lesion's anatomy-frame centre by world mm and voxel indices."""
    out = {k: v for k, v in lesion.items() if k != "center_anat"}
    world = (geo.pose @ np.append(lesion["center_anat"], 1.0))[:3]
    voxel = (np.linalg.inv(geo.affine) @ np.append(world, 1.0))[:3]
    out["center_mm"] = [round(float(v), 2) for v in world]
    out["center_voxel"] = [int(v) for v in np.rint(voxel)]
    return out


def _nodule_crop(
    out_dir: Path,
    name: str,
    hu: np.ndarray,
    instances: np.ndarray,
    geo: Geometry,
    nodule: dict[str, Any],
    voxel_volume: float,
    opts: PhantomOptions,
) -> dict[str, Any]:
    """Write a RAS-aligned crop (and mask) around a nodule; return its manifest fields."""
    row = _world(geo, nodule)
    centre = np.array(row["center_mm"])
    stem = f"{name}_n{nodule['id']:02d}"
    row["crop"] = f"nodule_crops/{stem}.nii.gz"
    row["crop_mask"] = f"labels/nodule_crops/{stem}_mask.nii.gz"
    row["volume_mm3"] = round(float((instances == nodule["id"]).sum()) * voxel_volume, 1)
    size, spacing = opts.crop_size, opts.crop_spacing
    image = sample_cube(hu, geo.affine, centre, size, spacing, order=1, cval=-1024.0)
    mask = sample_cube(
        (instances == nodule["id"]).astype(np.float32), geo.affine, centre, size, spacing, order=1
    )
    affine = cube_affine(centre, size, spacing)
    save_nifti(
        out_dir / row["crop"],
        np.rint(image).astype(np.int16),
        affine,
        f"{name} nodule {nodule['id']}",
    )
    save_nifti(
        out_dir / row["crop_mask"],
        (mask >= 0.5).astype(np.uint8),
        affine,
        f"{name} nodule {nodule['id']}",
    )
    return row


def _organ_crops(
    hu: np.ndarray, label: np.ndarray, affine: np.ndarray, opts: PhantomOptions
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Organ-centred cubes, windowed to uint8 at every size in `opts`.

    The cube is centred on the organ's centroid and spans its largest extent + 10 %; for long
    structures (aorta, spine: largest extent > 2.5 x the median one) it spans twice the median
    extent, a segment of the tube with its surroundings rather than the whole torso.
    """
    ids = [LABEL_OF[o] for o in ORGAN_CLASSES]
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    boxes = ndimage.find_objects(label, max_label=max(LABEL_OF.values()))
    centroids = ndimage.center_of_mass(label > 0, label, ids)
    largest = max(opts.organ_sizes)
    crops: dict[int, list[np.ndarray]] = {s: [] for s in opts.organ_sizes}
    labels = []
    for cls, (k, centroid) in enumerate(zip(ids, centroids)):
        box = boxes[k - 1]
        if box is None:
            continue
        extent = np.sort(
            [(s.stop - s.start) * float(d) for s, d in zip(box, spacing)]
        )  # grid frame
        side = 1.1 * extent[2] if extent[2] <= 2.5 * extent[1] else 2.0 * extent[1]
        centre = (affine @ np.append(centroid, 1.0))[:3]
        cube = sample_cube(
            hu, affine, centre, largest, (side + 4.0) / largest, order=1, cval=-1024.0
        )
        for s in opts.organ_sizes:
            crops[s].append(to_uint8(cube if s == largest else shrink_cube(cube, s), opts.window))
        labels.append(cls)
    return {s: np.stack(v) for s, v in crops.items()}, np.array(labels, dtype=np.uint8)
