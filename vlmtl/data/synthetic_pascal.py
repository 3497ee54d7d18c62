"""A small synthetic PASCAL-Context multi-task set, written in exactly the PASCAL_MT layout
that ``PascalContextMT`` reads, so the dense pipeline can be run and tested without the data.

Each scene is a wall (or sky, whose normals are invalid) over a floor plane, objects of
several VOC classes (spheres, capsules, planar boxes; animals with head/torso parts) and
sometimes persons built from Pascal-Part parts (head, hair, neck, torso, upper/lower arms,
hands, upper/lower legs, feet). Everything is painted back to front, so masks are the
visible regions; normals are the primitives' analytic normals (x right, y up, z towards
the camera) and the image is their Lambertian shading of per-class colours, so every task
is learnable from the image. Deterministic in ``seed``, byte for byte.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from vlmtl.registry import IGNORE_INDEX

from .pascal import PERSON_CLASS_IND

# Pascal-Part object class names, index = VOC class id (11 is "table" there).
PART_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
ANIMALS = (3, 8, 10, 12, 13, 17)
OBJECT_CLASSES = tuple(c for c in range(1, 21) if c != PERSON_CLASS_IND)
LIGHT = np.array([-0.35, 0.5, 0.79], dtype=np.float32) / np.linalg.norm([-0.35, 0.5, 0.79])
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by vlmtl.data.synthetic_pascal"


def _class_colours() -> np.ndarray:
    """A fixed, well-spread base colour per VOC class (index 0 unused)."""
    rng = np.random.default_rng(1234)
    return rng.uniform(40, 230, size=(21, 3)).astype(np.float32)


CLASS_COLOURS = _class_colours()


@dataclass
class _Canvas:
    """Per-pixel buffers of a scene being painted back to front."""

    h: int
    w: int
    cls: np.ndarray = field(init=False)
    inst: np.ndarray = field(init=False)
    part: np.ndarray = field(init=False)
    normal: np.ndarray = field(init=False)
    nvalid: np.ndarray = field(init=False)
    albedo: np.ndarray = field(init=False)
    xx: np.ndarray = field(init=False)
    yy: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cls = np.zeros((self.h, self.w), np.uint8)
        self.inst = np.zeros((self.h, self.w), np.int32)
        self.part = np.full((self.h, self.w), -1, np.int32)  # index into _Scene.part_names, -1 none
        self.normal = np.zeros((self.h, self.w, 3), np.float32)
        self.nvalid = np.zeros((self.h, self.w), bool)
        self.albedo = np.zeros((self.h, self.w, 3), np.float32)
        self.yy, self.xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32) + 0.5

    def paint(self, mask: np.ndarray, normal: np.ndarray, colour: np.ndarray, cls: int, inst: int, part: int) -> None:
        self.cls[mask], self.inst[mask], self.part[mask] = cls, inst, part
        self.normal[mask] = normal[mask] if normal.ndim == 3 else normal
        self.nvalid[mask] = True
        self.albedo[mask] = colour


# ----------------------------------------------------------------------------- primitives


def _sphere(cv: _Canvas, cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = (cv.xx - cx) / r, (cv.yy - cy) / r
    d2 = dx * dx + dy * dy
    mask = d2 < 1.0
    n = np.stack((dx, -dy, np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))), axis=-1)
    return mask, n


def _capsule(cv: _Canvas, p0: tuple[float, float], p1: tuple[float, float], r: float) -> tuple[np.ndarray, np.ndarray]:
    """A cylinder of radius r lying in the image plane from p0 to p1, with round ends."""
    (x0, y0), (x1, y1) = p0, p1
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((cv.xx - x0) * vx + (cv.yy - y0) * vy) / max(vx * vx + vy * vy, 1e-6), 0.0, 1.0)
    dx, dy = (cv.xx - (x0 + t * vx)) / r, (cv.yy - (y0 + t * vy)) / r
    d2 = dx * dx + dy * dy
    mask = d2 < 1.0
    n = np.stack((dx, -dy, np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))), axis=-1)
    return mask, n


def _box(cv: _Canvas, cx: float, cy: float, hw: float, hh: float, angle: float, normal: np.ndarray):
    """A planar rectangle (a box face) rotated by ``angle`` radians, one constant normal."""
    c, s = np.cos(angle), np.sin(angle)
    u = (cv.xx - cx) * c + (cv.yy - cy) * s
    v = -(cv.xx - cx) * s + (cv.yy - cy) * c
    return (np.abs(u) < hw) & (np.abs(v) < hh), normal.astype(np.float32)


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


# ----------------------------------------------------------------------------- scene


@dataclass
class _Scene:
    part_names: list[str] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)  # class id per instance (instance k = index + 1)

    def new_instance(self, cls: int) -> int:
        self.objects.append(cls)
        return len(self.objects)

    def part_id(self, name: str) -> int:
        self.part_names.append(name)
        return len(self.part_names) - 1


def _jitter(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    return np.clip(colour * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.float32)


def _paint_object(cv: _Canvas, scene: _Scene, rng: np.random.Generator, s: float) -> None:
    cls = int(rng.choice(OBJECT_CLASSES))
    inst = scene.new_instance(cls)
    colour = _jitter(rng, CLASS_COLOURS[cls])
    cx, cy = rng.uniform(0.1, 0.9) * cv.w, rng.uniform(0.3, 0.9) * cv.h
    size = rng.uniform(0.1, 0.25) * s
    if cls in ANIMALS:  # body + head, with Pascal-Part animal part names (not person parts)
        sign = rng.choice((-1.0, 1.0))
        body = _capsule(cv, (cx - size, cy), (cx + size, cy), 0.5 * size)
        head = _sphere(cv, cx + sign * 1.4 * size, cy - 0.5 * size, 0.45 * size)
        cv.paint(*body, colour, cls, inst, scene.part_id("torso"))
        cv.paint(*head, _jitter(rng, colour), cls, inst, scene.part_id("head"))
        return
    kind = rng.integers(3)
    if kind == 0:
        prim = _sphere(cv, cx, cy, size)
    elif kind == 1:
        half = rng.uniform(0.8, 1.6) * size
        prim = _capsule(cv, (cx, cy - half), (cx, cy + half), 0.6 * size)
    else:
        normal = _unit((rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.5), 1.0))
        prim = _box(cv, cx, cy, size, rng.uniform(0.5, 1.2) * size, rng.uniform(-0.4, 0.4), normal)
    cv.paint(*prim, colour, cls, inst, -1)


def _paint_person(cv: _Canvas, scene: _Scene, rng: np.random.Generator, s: float) -> None:
    """A standing figure facing the camera (its left = image right) from 16 part shapes."""
    inst = scene.new_instance(PERSON_CLASS_IND)
    frac = rng.uniform(0.55, 0.9)
    hgt, cx, top = frac * cv.h, rng.uniform(0.2, 0.8) * cv.w, rng.uniform(0.01, 0.97 - frac) * cv.h
    skin, shirt = _jitter(rng, np.array([225, 180, 150], np.float32)), _jitter(rng, CLASS_COLOURS[15])
    trousers, shoes = _jitter(rng, np.array([60, 70, 120], np.float32)), np.array([40, 30, 30], np.float32)

    def y(f: float) -> float:  # fraction of the figure's height -> pixel row
        return top + f * hgt

    r = max(0.035 * hgt, 1.2)
    shapes: list[tuple[str, tuple[np.ndarray, np.ndarray], np.ndarray]] = []
    for side, name in ((-1.0, "r"), (1.0, "l")):  # legs first: torso and arms go in front
        hip, ang_u, ang_l = (cx + side * 0.05 * hgt, y(0.52)), rng.uniform(-0.15, 0.3), rng.uniform(-0.2, 0.2)
        knee = (hip[0] + side * np.sin(ang_u) * 0.21 * hgt, hip[1] + np.cos(ang_u) * 0.21 * hgt)
        ankle = (knee[0] + side * np.sin(ang_l) * 0.2 * hgt, knee[1] + np.cos(ang_l) * 0.2 * hgt)
        shapes += [
            (f"{name}uleg", _capsule(cv, hip, knee, 1.3 * r), trousers),
            (f"{name}lleg", _capsule(cv, knee, ankle, 1.1 * r), trousers),
            (f"{name}foot", _capsule(cv, ankle, (ankle[0] + side * 0.05 * hgt, ankle[1] + 0.01 * hgt), r), shoes),
        ]
    shapes += [
        ("neck", _capsule(cv, (cx, y(0.15)), (cx, y(0.22)), 0.9 * r), skin),
        ("torso", _capsule(cv, (cx, y(0.25)), (cx, y(0.48)), 2.8 * r), shirt),
    ]
    for side, name in ((-1.0, "r"), (1.0, "l")):
        shoulder, ang_u = (cx + side * 0.1 * hgt, y(0.25)), rng.uniform(0.15, 0.9)
        ang_l = ang_u + rng.uniform(-0.6, 0.9)
        elbow = (shoulder[0] + side * np.sin(ang_u) * 0.17 * hgt, shoulder[1] + np.cos(ang_u) * 0.17 * hgt)
        wrist = (elbow[0] + side * np.sin(ang_l) * 0.16 * hgt, elbow[1] + np.cos(ang_l) * 0.16 * hgt)
        shapes += [
            (f"{name}uarm", _capsule(cv, shoulder, elbow, r), shirt),
            (f"{name}larm", _capsule(cv, elbow, wrist, 0.9 * r), skin),
            (f"{name}hand", _sphere(cv, *wrist, 1.2 * r), skin),
        ]
    head_cy, head_r = y(0.09), 0.08 * hgt
    head = _sphere(cv, cx, head_cy, head_r)
    shapes.append(("head", head, skin))
    if rng.random() < 0.6:
        hair = head[0] & (cv.yy < head_cy - 0.35 * head_r)
        shapes.append(("hair", (hair, head[1]), np.array([50, 35, 20], np.float32)))
    for name, prim, colour in shapes:
        cv.paint(*prim, colour, PERSON_CLASS_IND, inst, scene.part_id(name))


def _render(rng: np.random.Generator, h: int, w: int, with_person: bool) -> tuple[_Canvas, _Scene]:
    cv, scene = _Canvas(h, w), _Scene()
    horizon = int(rng.uniform(0.35, 0.6) * h)
    sky = bool(rng.random() < 0.3)
    upper = cv.yy < horizon
    if sky:  # no surface: normals invalid, as for PASCAL classes without NYUD normals
        cv.albedo[upper] = np.array([135, 180, 235], np.float32) * (0.8 + 0.2 * cv.yy[upper, None] / h)
    else:
        cv.paint(upper, _unit((0.0, 0.0, 1.0)), _jitter(rng, np.array([170, 160, 140], np.float32)), 0, 0, -1)
    floor_n = _unit((0.0, 1.0, rng.uniform(0.3, 0.9)))
    cv.paint(~upper, floor_n, _jitter(rng, np.array([120, 100, 80], np.float32)), 0, 0, -1)
    s = float(min(h, w))
    entities = ["object"] * int(rng.integers(1, 4)) + (["person"] * int(rng.integers(1, 3)) if with_person else [])
    depths = rng.random(len(entities))
    for k in np.argsort(-depths, kind="stable"):  # far to near
        (_paint_person if entities[k] == "person" else _paint_object)(cv, scene, rng, s)
    return cv, scene


def _image(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    shade = 0.25 + 0.75 * np.clip(cv.normal @ LIGHT, 0.0, 1.0)
    shade = np.where(cv.nvalid, shade, 1.0)
    img = cv.albedo * shade[..., None] + rng.normal(0.0, 4.0, cv.albedo.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _semseg(cv: _Canvas) -> np.ndarray:
    """Class map with a one-pixel ignore band on instance boundaries, as VOC-style labels have."""
    lab = cv.cls.copy()
    edge = np.zeros_like(cv.cls, dtype=bool)
    edge[:, 1:] |= cv.inst[:, 1:] != cv.inst[:, :-1]
    edge[1:, :] |= cv.inst[1:, :] != cv.inst[:-1, :]
    lab[edge] = IGNORE_INDEX
    return lab


def _normals_png(cv: _Canvas) -> np.ndarray:
    v = np.clip(np.round((cv.normal + 1.0) * 127.5), 0, 255).astype(np.uint8)
    v[~cv.nvalid] = 128  # decodes to ~0: "no normal"
    return v


def _saliency_png(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Soft-looking distilled map: foreground well above 0.5 * 255, background well below."""
    fg, bg = int(rng.integers(180, 256)), int(rng.integers(0, 90))
    return np.where(cv.inst > 0, fg, bg).astype(np.uint8)


def _anno(cv: _Canvas, scene: _Scene, image_id: str) -> np.ndarray:
    """The Pascal-Part ``anno`` struct (see ``vlmtl.data.pascal.read_human_parts``)."""
    part_dt = [("part_name", "O"), ("mask", "O")]
    obj_dt = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    objects = np.zeros((1, len(scene.objects)), dtype=obj_dt)
    for k, cls in enumerate(scene.objects):
        visible = cv.inst == k + 1
        ids = sorted({int(p) for p in np.unique(cv.part[visible]) if p >= 0})
        names = sorted({scene.part_names[p] for p in ids})
        if names:
            parts = np.zeros((1, len(names)), dtype=part_dt)
            for j, name in enumerate(names):
                members = [p for p in ids if scene.part_names[p] == name]
                parts[0, j] = (name, (visible & np.isin(cv.part, members)).astype(np.uint8))
        else:
            parts = np.zeros((0, 0))
        objects[0, k] = (PART_CLASS_NAMES[cls], np.array([[cls]], np.uint8), visible.astype(np.uint8), parts)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (image_id, objects)
    return anno


def _write_mat(path: Path, anno: np.ndarray) -> None:
    """savemat with a fixed header text (scipy stamps the time there) so files are reproducible."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"anno": anno}, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))


def write_synthetic_pascal(
    root: str | Path, n_train: int, n_val: int, seed: int = 0, size: int = 96
) -> dict[str, list[str]]:
    """Write ``n_train`` / ``n_val`` synthetic scenes (sides ~0.8-1.25 x ``size``) under ``root``
    in the PASCAL_MT layout; returns the ids per split. Item 0 of a split always has a person
    and item 1 never does, so both kinds occur in any set of two or more."""
    root = Path(root)
    dirs = {k: root / k for k in ("JPEGImages", "ImageSets/Context", "semseg/pascal-context", "human_parts",
                                  "sal_distill", "normals_distill")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for code, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        ids = [f"{2008 + code}_{i:06d}" for i in range(n)]
        for i, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, code, i])
            h, w = (int(rng.integers(round(0.8 * size), round(1.25 * size) + 1)) for _ in range(2))
            with_person = i == 0 or (i != 1 and bool(rng.random() < 0.6))
            cv, scene = _render(rng, h, w, with_person)
            Image.fromarray(_image(cv, rng)).save(dirs["JPEGImages"] / f"{image_id}.jpg", quality=92)
            Image.fromarray(_semseg(cv)).save(dirs["semseg/pascal-context"] / f"{image_id}.png")
            Image.fromarray(_saliency_png(cv, rng)).save(dirs["sal_distill"] / f"{image_id}.png")
            Image.fromarray(_normals_png(cv)).save(dirs["normals_distill"] / f"{image_id}.png")
            _write_mat(dirs["human_parts"] / f"{image_id}.mat", _anno(cv, scene, image_id))
        (dirs["ImageSets/Context"] / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        out[split] = ids
    return out
