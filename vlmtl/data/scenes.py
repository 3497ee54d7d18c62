"""Procedural scenes (shapes on a 3×3 grid) and their rendering with PIL.

A scene is pure data drawn from a seed; rendering, captions and questions all derive
from it, so every task is grounded in the same image content (tasks interfere) and
everything is reproducible byte for byte.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (140, 60, 185),
    "orange": (250, 140, 25),
    "cyan": (40, 205, 215),
    "brown": (125, 75, 35),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (246, 246, 246),
    "gray": (196, 196, 196),
    "beige": (228, 216, 188),
}
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
OBJECT_COUNT_P = (0.1, 0.3, 0.3, 0.3)  # 1..4 objects; few single-object scenes (only 720 exist)
SUPERSAMPLE = 4
COLOR_JITTER = 10


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    row: int  # 0..2 = top, middle, bottom
    col: int  # 0..2 = left, center, right
    cx: float  # centre in pixels of the rendered image
    cy: float
    radius: float
    rgb: tuple[int, int, int]  # jittered colour actually drawn

    def signature(self) -> tuple[str, str, str, int, int]:
        return (self.shape, self.color, self.size, self.row, self.col)


@dataclass
class Scene:
    scene_id: str
    seed: int
    image_size: int
    background: str
    textured: bool
    objects: list[SceneObject] = field(default_factory=list)

    def signature(self) -> tuple:
        """What the scene says (not pixel jitter): equal signatures = same description."""
        return tuple(sorted(o.signature() for o in self.objects))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generate_scenes(
    n: int,
    seed: int,
    image_size: int = 64,
    exclude: Collection[tuple] = (),
    id_prefix: str = "scene",
) -> list[Scene]:
    """``n`` scenes with distinct signatures, none of them in ``exclude`` (signatures of
    other splits); deterministic in ``(n, seed, image_size, exclude)``."""
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 to draw shapes, got {image_size}")
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    scenes: list[Scene] = []
    attempts = 0
    while len(scenes) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct scenes (too many excluded signatures)")
        scene = _random_scene(rng, f"{id_prefix}_{len(scenes):06d}", image_size)
        sig = scene.signature()
        if sig in seen:
            continue
        seen.add(sig)
        scenes.append(scene)
    return scenes


def _random_scene(rng: np.random.Generator, scene_id: str, image_size: int) -> Scene:
    cell = image_size / 3
    n_obj = int(rng.choice(4, p=OBJECT_COUNT_P)) + 1
    cells = rng.choice(9, size=n_obj, replace=False)
    objects = []
    for c in cells:
        row, col = divmod(int(c), 3)
        size = SIZES[int(rng.integers(2))]
        radius = cell * (0.40 if size == "large" else 0.24)
        slack = cell * 0.5 - radius - cell * 0.04
        cx = (col + 0.5) * cell + float(rng.uniform(-slack, slack))
        cy = (row + 0.5) * cell + float(rng.uniform(-slack, slack))
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        rgb = tuple(int(v) for v in np.clip(np.array(COLORS[color]) + jitter, 0, 255))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        objects.append(SceneObject(shape, color, size, row, col, round(cx, 3), round(cy, 3), round(radius, 3), rgb))
    objects.sort(key=lambda o: (o.row, o.col))
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    textured = bool(rng.integers(2))
    seed = int(rng.integers(2**62))
    return Scene(scene_id, seed, image_size, background, textured, objects)


def render_scene(scene: Scene) -> Image.Image:
    """RGB image: plain or noisy background, anti-aliased shapes (drawn at 4× then reduced)."""
    size = scene.image_size
    big = size * SUPERSAMPLE
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for o in scene.objects:
        _draw_shape(draw, o.shape, o.cx * SUPERSAMPLE, o.cy * SUPERSAMPLE, o.radius * SUPERSAMPLE, (*o.rgb, 255))
    layer = layer.resize((size, size), Image.Resampling.BOX)
    bg = np.empty((size, size, 3), dtype=np.float32)
    bg[:] = BACKGROUNDS[scene.background]
    if scene.textured:
        rng = np.random.default_rng([scene.seed, 1])
        yy, xx = np.mgrid[0:size, 0:size]
        stripes = 6.0 * np.sin((xx + yy) * (2 * np.pi / 8.0))
        bg += (stripes + rng.normal(0.0, 5.0, size=(size, size)))[..., None]
    base = Image.fromarray(np.clip(bg, 0, 255).round().astype(np.uint8), "RGB").convert("RGBA")
    return Image.alpha_composite(base, layer).convert("RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = r * 0.85
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        pts = [(float(cx + r * np.cos(a)), float(cy - r * np.sin(a))) for a in np.deg2rad([90, 210, 330])]
        draw.polygon(pts, fill=fill)
    elif shape == "star":
        angles = np.deg2rad(90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon([(float(cx + q * np.cos(a)), float(cy - q * np.sin(a))) for q, a in zip(radii, angles)], fill=fill)
    elif shape == "cross":
        w = r * 0.32
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known shapes are {list(SHAPES)}")
