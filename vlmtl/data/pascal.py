"""PASCAL-Context multi-task dense data (semseg, human parts, saliency, normals) read from the
PASCAL_MT layout of ASTMT / MTI-Net / MTLoRA, with the paper's augmentation.

Layout under ``root`` (``<id>`` from the split file)::

    JPEGImages/<id>.jpg
    ImageSets/Context/{train,val}.txt
    semseg/pascal-context/<id>.png      21 classes, 255 ignore (semseg/VOC12/<id>.png wins if present)
    human_parts/<id>.mat                Pascal-Part annotation, see ``read_human_parts``
    sal_distill/<id>.png                grey levels, binarised at > 0.5 * 255
    normals_distill/<id>.png            RGB = (x, y, z) with n = 2 v / 255 - 1
    [json/{nyu,context}_classes.json + pascal-context/trainval/<id>.mat]   optional, see below

Conventions (the official code's, where it has one):
- human parts: the official 24 Pascal-Part person part names mapped to 7 classes
  (0 background, 1 head, 2 torso, 3 upper arms, 4 lower arms + hands, 5 upper legs,
  6 lower legs + feet); an image without a labelled person part is 255 everywhere
  (official ``AddIgnoreRegions``: all-zero parts -> ignore), so it adds no parts loss.
- normals: unit vectors in the camera frame, x right, y up, z towards the camera.
  A pixel is valid where the decoded vector is not (near) zero; when the two class
  lists under ``json/`` exist, additionally only where the PASCAL-Context 459-class
  ``LabelMap`` holds one of the classes shared with NYUD (+ tvmonitor), exactly as the
  official loader masks them. Invalid pixels are 0 vectors with ``normals_mask`` False.
- augmentation (train): random horizontal flip, rotation in [-20, 20] degrees and scale in
  [0.75, 1.25] about the image centre, then resize to ``img_size``; one resampling of the
  original (nearest for labels, bilinear for image and normals, normals re-normalised).
  Two deliberate deviations from the official code: regions rotated in from outside the
  image are ignore (255 / mask False) instead of background, and the normal vectors'
  (x, y) are rotated with the image (``rotate_normals=False`` gives the official behaviour).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from vlmtl.registry import DENSE_TASKS, IGNORE_INDEX

from .images import ImageLoadError, load_image

NUM_SEMSEG_CLASSES = 21
PERSON_CLASS_IND = 15  # VOC / Pascal-Part class index of "person"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HUMAN_PART_CLASSES = ("background", "head", "torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs")
# The official 6-part grouping (ASTMT / MTI-Net HUMAN_PART) of the Pascal-Part person part names.
HUMAN_PART_MAP: dict[str, int] = {
    "hair": 1, "head": 1, "lear": 1, "rear": 1, "lebrow": 1, "rebrow": 1, "leye": 1, "reye": 1,
    "mouth": 1, "nose": 1,
    "neck": 2, "torso": 2,
    "luarm": 3, "ruarm": 3,
    "llarm": 4, "rlarm": 4, "lhand": 4, "rhand": 4,
    "luleg": 5, "ruleg": 5,
    "llleg": 6, "rlleg": 6, "lfoot": 6, "rfoot": 6,
}

SPLIT_DIR = "ImageSets/Context"
IMAGE_DIR = "JPEGImages"
SEMSEG_DIR = "semseg/pascal-context"
SEMSEG_VOC_DIR = "semseg/VOC12"
TASK_FILES: dict[str, tuple[str, str]] = {
    "semseg": (SEMSEG_DIR, ".png"),
    "human_parts": ("human_parts", ".mat"),
    "saliency": ("sal_distill", ".png"),
    "normals": ("normals_distill", ".png"),
}
LABEL_MAP_DIR = "pascal-context/trainval"
NYU_CLASSES_JSON = "json/nyu_classes.json"
CONTEXT_CLASSES_JSON = "json/context_classes.json"


class AnnotationLoadError(ImageLoadError):
    """A label file (PNG or .mat) is unreadable, corrupt or not in the expected format."""


# ----------------------------------------------------------------------------- label readers


def _read_png(path: Path, what: str) -> np.ndarray:
    """Decode a label PNG keeping its stored values (palette indices stay indices)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA"):
                im = im.convert(im.mode[:-1])
            return np.array(im)
    except Exception as e:
        raise AnnotationLoadError(f"cannot read {what} file {path}: {type(e).__name__}: {e}") from e


def _check_shape(arr: np.ndarray, shape: tuple[int, int] | None, path: Path, what: str) -> None:
    if shape is not None and tuple(arr.shape[:2]) != tuple(shape):
        raise AnnotationLoadError(f"{what} file {path} has size {arr.shape[:2]}, its image has {tuple(shape)}")


def read_semseg(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) uint8 in 0..20 or 255; other values mean a wrong label set and raise."""
    path = Path(path)
    lab = _read_png(path, "semseg")
    if lab.ndim != 2:
        raise AnnotationLoadError(f"semseg file {path} is not a single-channel label image (shape {lab.shape})")
    _check_shape(lab, shape, path, "semseg")
    bad = (lab >= NUM_SEMSEG_CLASSES) & (lab != IGNORE_INDEX)
    if bad.any():
        raise AnnotationLoadError(f"semseg file {path} has labels outside 0..20/255: {np.unique(lab[bad])[:5]}")
    return lab.astype(np.uint8)


def read_saliency(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) uint8 in {0, 1}: the distilled grey map binarised at > 0.5 (official)."""
    path = Path(path)
    sal = _read_png(path, "saliency")
    if sal.ndim == 3:  # tolerate RGB-saved grey maps
        sal = sal[..., 0]
    _check_shape(sal, shape, path, "saliency")
    return (sal.astype(np.float32) / 255.0 > 0.5).astype(np.uint8)


def read_normals(
    path: str | Path, shape: tuple[int, int] | None = None, label_map: np.ndarray | None = None,
    valid_classes: frozenset[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32 unit normals (0 where invalid) and the (H, W) bool valid mask.

    Valid: the decoded vector has norm > 0.5 (a grey 128 pixel encodes "no normal"), and,
    given the official class masking, the 459-class ``label_map`` is in ``valid_classes``."""
    path = Path(path)
    raw = _read_png(path, "normals")
    if raw.ndim != 3 or raw.shape[2] != 3:
        raise AnnotationLoadError(f"normals file {path} is not an RGB image (shape {raw.shape})")
    _check_shape(raw, shape, path, "normals")
    n = 2.0 * raw.astype(np.float32) / 255.0 - 1.0
    norm = np.linalg.norm(n, axis=2)
    valid = norm > 0.5
    if valid_classes is not None and label_map is not None:
        _check_shape(label_map, raw.shape[:2], path, "LabelMap for normals")
        valid &= np.isin(label_map, np.fromiter(valid_classes, dtype=np.int64))
    n = np.where(valid[..., None], n / np.maximum(norm, 1e-6)[..., None], 0.0).astype(np.float32)
    return n, valid


def _scalar(x: Any) -> Any:
    """The single element of a loadmat cell/array (MATLAB stores scalars as 1x1 arrays)."""
    return np.asarray(x).reshape(-1)[0]


def read_human_parts(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 in 0..6, or 255 everywhere when the image has no labelled person part.

    Reads the Pascal-Part annotation as the official PASCAL-MT loader does (by position it
    uses ``anno[0][0][1][0]`` = objects, object fields 1 = class_ind, 2 = mask, 3 = parts,
    part fields 0 = part_name, 1 = mask); the same fields by name here::

        anno: 1x1 struct (imname: char, objects: 1xN struct)
        objects(i): class: char ('person', 'cat', ...), class_ind: 1x1 number (15 = person),
                    mask: HxW uint8 (visible object), parts: 1xP struct or [] (no parts)
        parts(j):   part_name: char ('head', 'luarm', ... see HUMAN_PART_MAP), mask: HxW uint8

    The image counts as having persons when some person object has a non-empty mask; then
    every person object with parts paints its part masks, in order, over a 0 background.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"human_parts file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:
        raise AnnotationLoadError(f"cannot read human_parts file {path}: {type(e).__name__}: {e}") from e
    try:
        objects = np.asarray(mat["anno"][0, 0]["objects"]).reshape(-1)
        persons = [o for o in objects if int(_scalar(o["class_ind"])) == PERSON_CLASS_IND]
        has_person = any(np.asarray(o["mask"]).sum() > 0 for o in persons)
        target = np.zeros(shape, dtype=np.uint8)
        if has_person:
            for obj in persons:
                parts = np.asarray(obj["parts"])
                for part in parts.reshape(-1) if parts.size else ():
                    name = str(_scalar(part["part_name"]))
                    if name not in HUMAN_PART_MAP:
                        raise AnnotationLoadError(f"human_parts file {path}: unknown person part name {name!r}")
                    mask = np.asarray(part["mask"]).astype(bool)
                    _check_shape(mask, shape, path, "human_parts")
                    target[mask] = HUMAN_PART_MAP[name]
    except AnnotationLoadError:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise AnnotationLoadError(
            f"human_parts file {path} is not a Pascal-Part annotation (anno.objects.class_ind/mask/parts): "
            f"{type(e).__name__}: {e}"
        ) from e
    if not target.any():  # official AddIgnoreRegions: no part pixel -> whole image ignored
        target.fill(IGNORE_INDEX)
    return target


def read_normals_valid_classes(root: str | Path) -> frozenset[int] | None:
    """The official normals classes: PASCAL-Context classes also in NYUD (minus 'unknown')
    plus tvmonitor; None when ``json/{nyu,context}_classes.json`` are absent.

    Both files are JSON objects of class name → index in the official MTLoRA / ASTMT
    repositories; the official loader iterates the NYUD file's keys and looks each name up in
    the context file. A plain list of NYUD names is read the same way."""
    root = Path(root)
    nyu_path, ctx_path = root / NYU_CLASSES_JSON, root / CONTEXT_CLASSES_JSON
    if not (nyu_path.is_file() and ctx_path.is_file()):
        return None
    try:
        cls_nyu = json.loads(nyu_path.read_text())
        cls_context = json.loads(ctx_path.read_text())
        if not isinstance(cls_nyu, (dict, list)) or not isinstance(cls_context, dict):
            raise ValueError("expected JSON objects of class name: index (NYUD names may also be a list)")
        valid = {int(cls_context[c]) for c in cls_nyu if c in cls_context and c != "unknown"}
        if "tvmonitor" in cls_context:
            valid.add(int(cls_context["tvmonitor"]))
    except (OSError, ValueError, TypeError, OverflowError) as e:  # int(None), int(inf), unhashable names
        raise AnnotationLoadError(f"cannot read normals class lists {nyu_path} / {ctx_path}: {e}") from e
    return frozenset(valid)


def read_label_map(path: str | Path) -> np.ndarray:
    """The PASCAL-Context 459-class ``LabelMap`` of ``pascal-context/trainval/<id>.mat``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PASCAL-Context label map not found: {path}")
    try:
        return np.asarray(scipy.io.loadmat(str(path))["LabelMap"])
    except Exception as e:
        raise AnnotationLoadError(f"cannot read LabelMap from {path}: {type(e).__name__}: {e}") from e


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugParams:
    """One draw of the train augmentation; ``angle`` in degrees, counter-clockwise on screen."""

    flip: bool = False
    angle: float = 0.0
    scale: float = 1.0


def sample_aug_params(
    generator: torch.Generator | None = None, max_angle: float = 20.0, scale_range: tuple[float, float] = (0.75, 1.25)
) -> AugParams:
    """Flip with p=0.5, angle ~ U(-max_angle, max_angle), scale ~ U(scale_range) (official ranges)."""
    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    lo, hi = scale_range
    return AugParams(flip=u[0] < 0.5, angle=(2.0 * u[1] - 1.0) * max_angle, scale=lo + (hi - lo) * u[2])


def _sampling_grid(h: int, w: int, out_h: int, out_w: int, angle: float, scale: float) -> torch.Tensor:
    """grid_sample grid: output pixel -> source position, for rotate/scale about the centre
    (in source pixel units, so rotation stays rigid on non-square images) then resize."""
    ys = (torch.arange(out_h, dtype=torch.float64) * 2 + 1) / out_h - 1
    xs = (torch.arange(out_w, dtype=torch.float64) * 2 + 1) / out_w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    px, py = gx * (w / 2), gy * (h / 2)  # offsets from the centre, y down
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # forward (counter-clockwise on screen, y down): x' = c x + s y, y' = -s x + c y; invert it
    sx, sy = (c * px - s * py) / scale, (s * px + c * py) / scale
    return torch.stack((sx / (w / 2), sy / (h / 2)), dim=-1).unsqueeze(0).float()


def _normalise_image(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def transform_sample(
    raw: dict[str, Any], out_size: tuple[int, int], params: AugParams | None, rotate_normals: bool = True
) -> dict[str, Any]:
    """Resample an original-resolution sample (from ``PascalContextMT.load``) once to ``out_size``.

    ``params=None`` is a plain resize. Out-of-image pixels: image 0 (the mean colour after
    normalisation), labels 255, normals invalid."""
    params = params or AugParams()
    image = raw["image"]
    h, w = image.shape[-2:]
    grid = _sampling_grid(h, w, out_size[0], out_size[1], params.angle, params.scale)
    smooth = [image]
    if "normals" in raw:
        smooth += [raw["normals"], raw["normals_mask"][None].float()]
    warped = F.grid_sample(torch.cat(smooth)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    labels = [t for t in ("semseg", "human_parts", "saliency") if t in raw]
    out: dict[str, Any] = {"image": warped[:3]}
    if labels:
        stack = torch.stack([raw[t].float() for t in labels] + [torch.ones(h, w)])[None]
        lab = F.grid_sample(stack, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
        inside = lab[-1] > 0.5
        for k, t in enumerate(labels):
            out[t] = torch.where(inside, lab[k].round().long(), torch.full_like(lab[k], IGNORE_INDEX).long())
    if "normals" in raw:
        n, m = warped[3:6], warped[6]
        norm = n.norm(dim=0)
        mask = (m > 0.5) & (norm > 0.1)
        n = torch.where(mask, n / norm.clamp_min(1e-6), torch.zeros_like(n))
        if rotate_normals and params.angle:
            c, s = math.cos(math.radians(params.angle)), math.sin(math.radians(params.angle))
            n = torch.stack((c * n[0] - s * n[1], s * n[0] + c * n[1], n[2]))  # y up: same turn as the image
        out["normals"], out["normals_mask"] = n, mask
    if params.flip:
        out = {k: v.flip(-1) for k, v in out.items()}
        if "normals" in out:
            out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    return out


# ----------------------------------------------------------------------------- dataset


class PascalContextMT(Dataset):
    """PASCAL-Context multi-task items: ``image`` (3,H,W) ImageNet-normalised float,
    ``semseg``/``human_parts``/``saliency`` (H,W) long with 255 ignore, ``normals`` (3,H,W)
    unit float with ``normals_mask`` (H,W) bool, ``meta`` {id, orig_size (H, W)}.

    Augmentation randomness: with ``seed`` set, item ``i`` of epoch ``e`` (``set_epoch``) always
    gets the same draw, whatever the worker; with ``seed=None`` it comes from torch's global
    generator, which DataLoader seeds per worker from its own ``generator``. Files are checked
    at construction so a bad path fails before training, not hours in."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = tuple(DENSE_TASKS),
        img_size: int | tuple[int, int] = 448,
        augment: bool | None = None,
        seed: int | None = None,
        rotate_normals: bool = True,
    ):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        unknown = [t for t in tasks if t not in DENSE_TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {tuple(DENSE_TASKS)}, got {tuple(tasks)}")
        self.root = Path(root)
        self.split = split
        self.tasks = tuple(tasks)
        self.img_size = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.seed = seed
        self.rotate_normals = rotate_normals
        self.epoch = 0
        if not self.root.is_dir():
            raise FileNotFoundError(f"PASCAL_MT root folder not found: {self.root}")
        self.ids = self._read_split()
        self.normals_valid_classes = read_normals_valid_classes(self.root) if "normals" in self.tasks else None
        if "normals" in self.tasks and self.normals_valid_classes is None:
            warnings.warn(
                f"{self.root / NYU_CLASSES_JSON} and {self.root / CONTEXT_CLASSES_JSON} not found: normals are "
                "supervised and scored on every pixel with a ground-truth normal, unlike the official protocol, "
                "which keeps only the PASCAL-Context classes shared with NYUD (copy the two class lists from the "
                "official PASCAL_MT release to follow it)", UserWarning, stacklevel=2)
        self._check_files()

    # -- construction helpers
    def _folder(self, rel: str) -> Path:
        path = self.root / rel
        if not path.is_dir():
            raise FileNotFoundError(f"PASCAL_MT folder not found: {path}")
        return path

    def _read_split(self) -> list[str]:
        split_file = self._folder(SPLIT_DIR) / f"{self.split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split file not found: {split_file}")
        try:
            text = split_file.read_text()
        except UnicodeDecodeError as e:
            raise ValueError(f"split file {split_file} is not a text file of image ids: {e}") from e
        ids = [line.strip() for line in text.splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"split file {split_file} lists no image ids")
        return ids

    def _check_files(self) -> None:
        split_file = self.root / SPLIT_DIR / f"{self.split}.txt"
        image_dir = self._folder(IMAGE_DIR)
        present = {p.name for p in image_dir.iterdir()}
        missing = [i for i in self.ids if f"{i}.jpg" not in present]
        if missing:
            raise FileNotFoundError(
                f"split file {split_file} lists id {missing[0]!r} whose image is missing: "
                f"{image_dir / (missing[0] + '.jpg')}"
                + (f" (and {len(missing) - 1} more ids)" if len(missing) > 1 else "")
            )
        needed = [TASK_FILES[t] for t in self.tasks]
        if self.normals_valid_classes is not None:
            needed.append((LABEL_MAP_DIR, ".mat"))
        voc_dir = self.root / SEMSEG_VOC_DIR
        voc = {p.name for p in voc_dir.iterdir()} if "semseg" in self.tasks and voc_dir.is_dir() else set()
        for rel, ext in needed:
            folder = self._folder(rel)
            names = {p.name for p in folder.iterdir()} | (voc if rel == SEMSEG_DIR else set())
            gone = [i for i in self.ids if f"{i}{ext}" not in names]
            if gone:
                raise FileNotFoundError(
                    f"annotation file not found for id {gone[0]!r}: {folder / (gone[0] + ext)}"
                    + (f" (and {len(gone) - 1} more ids)" if len(gone) > 1 else "")
                )

    # -- public API
    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (only matters with ``seed`` set)."""
        self.epoch = int(epoch)

    def path(self, task: str, image_id: str) -> Path:
        """File of ``task`` ('image' or a dense task) for ``image_id``."""
        if task == "image":
            return self.root / IMAGE_DIR / f"{image_id}.jpg"
        if task == "semseg":
            voc = self.root / SEMSEG_VOC_DIR / f"{image_id}.png"  # the official loader prefers VOC12
            if voc.is_file():
                return voc
        rel, ext = TASK_FILES[task]
        return self.root / rel / f"{image_id}{ext}"

    def load(self, index: int) -> dict[str, Any]:
        """Original-resolution tensors, before any resize or augmentation."""
        image_id = self.ids[index]
        rgb = np.array(load_image(self.path("image", image_id)))
        shape = rgb.shape[:2]
        raw: dict[str, Any] = {"image": _normalise_image(rgb), "meta": {"id": image_id, "orig_size": tuple(shape)}}
        if "semseg" in self.tasks:
            raw["semseg"] = torch.from_numpy(read_semseg(self.path("semseg", image_id), shape))
        if "human_parts" in self.tasks:
            raw["human_parts"] = torch.from_numpy(read_human_parts(self.path("human_parts", image_id), shape))
        if "saliency" in self.tasks:
            raw["saliency"] = torch.from_numpy(read_saliency(self.path("saliency", image_id), shape))
        if "normals" in self.tasks:
            label_map = None
            if self.normals_valid_classes is not None:
                label_map = read_label_map(self.root / LABEL_MAP_DIR / f"{image_id}.mat")
            n, valid = read_normals(self.path("normals", image_id), shape, label_map, self.normals_valid_classes)
            raw["normals"] = torch.from_numpy(n).permute(2, 0, 1).contiguous()
            raw["normals_mask"] = torch.from_numpy(valid)
        return raw

    def aug_params(self, index: int) -> AugParams | None:
        """This item's augmentation draw (None when not augmenting)."""
        if not self.augment:
            return None
        generator = None
        if self.seed is not None:
            state = np.random.SeedSequence([int(self.seed), self.epoch, int(index)]).generate_state(2)
            generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return sample_aug_params(generator)

    def get(self, index: int, params: AugParams | None = None) -> dict[str, Any]:
        """Item ``index`` under explicit augmentation ``params`` (None: plain resize)."""
        raw = self.load(index)
        meta = raw.pop("meta")
        item = transform_sample(raw, self.img_size, params, self.rotate_normals)
        item["meta"] = meta
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, self.aug_params(index))

    def __repr__(self) -> str:
        return (f"PascalContextMT(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, tasks={self.tasks}, "
                f"img_size={self.img_size}, augment={self.augment})")
