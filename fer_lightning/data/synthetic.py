"""Built-in synthetic FER2013: procedurally drawn 48x48 faces whose expression depends on the class.

Each class sets the means of a few expression features (mouth curve, openness, width and
asymmetry; brow slope and height; eye openness), which are then jittered per image so that classes
overlap. Pose (rotation, shift, scale), skin, hair, background, lighting gradient, contrast and
gaussian noise vary independently of the class. Everything is drawn with numpy on coordinate grids,
a whole batch of images at once, and written in the exact fer2013 csv format so that the real
parser reads it. It lets the whole pipeline run (and learn: a small CNN reaches well above chance
within two epochs) without downloading FER2013.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fer_lightning.classes import IMAGE_SIZE, NUM_CLASSES
from fer_lightning.data.fer2013_csv import COLUMNS, NUM_PIXELS, SPLITS
from fer_lightning.errors import FERUserError
from fer_lightning.files import write_atomically

# Rows per class in the real FER2013 Training split (Kaggle's fer2013.csv).
FER2013_TRAINING_COUNTS: tuple[int, ...] = (3995, 436, 4097, 7215, 4830, 3171, 4965)

# Per-class means of the expression features, in the order of _FEATURES; see _draw_faces for units.
_FEATURES = (
    "mouth_curve",  # > 0 smile (corners up), < 0 frown
    "mouth_open",  # half-height of the open mouth
    "mouth_width",  # half-width of the mouth
    "mouth_tilt",  # one-sided raise of the upper lip (sign drawn at random)
    "brow_slope",  # > 0 inner ends down (anger), < 0 inner ends up (sadness, fear)
    "brow_raise",  # > 0 brows higher
    "eye_open",  # eye height relative to neutral
)
_CLASS_MEANS = np.array(
    [
        # curve  open  width  tilt  slope  raise  eye
        [-0.03, 0.00, 0.20, 0.00, 0.45, -0.06, 0.65],  # Angry: brows down and in, pressed lips
        [-0.05, 0.03, 0.22, 0.25, 0.25, -0.04, 0.55],  # Disgust: raised lip on one side
        [-0.02, 0.07, 0.31, 0.00, -0.25, 0.08, 1.50],  # Fear: stretched open mouth, wide eyes
        [0.11, 0.03, 0.27, 0.00, 0.00, 0.02, 0.80],  # Happy: smile
        [-0.09, 0.00, 0.21, 0.00, -0.40, 0.02, 0.80],  # Sad: frown, inner brows up
        [0.00, 0.14, 0.13, 0.00, 0.00, 0.12, 1.60],  # Surprise: round open mouth, raised brows
        [0.00, 0.00, 0.22, 0.00, 0.00, 0.00, 1.00],  # Neutral
    ],
    dtype=np.float32,
)
_FEATURE_JITTER = np.array([0.03, 0.02, 0.03, 0.06, 0.15, 0.03, 0.20], dtype=np.float32)
_BATCH = 512  # images drawn at once; keeps the float temporaries small
# "<value> " zero-padded to 4 bytes, per grey level
_PIXEL_SLOTS = np.array(
    [list(f"{value} ".encode().ljust(4, b"\0")) for value in range(256)], np.uint8
)


def class_counts_for(total: int) -> list[int]:
    """Split ``total`` rows over the classes in FER2013 Training proportions, at least one each.

    Largest-remainder rounding after giving every class one row, so the counts sum to ``total``.
    """
    if total < NUM_CLASSES:
        raise FERUserError(
            f"a synthetic split needs at least {NUM_CLASSES} rows (one per class), got {total}"
        )
    weights = np.asarray(FER2013_TRAINING_COUNTS, dtype=np.float64)
    shares = weights / weights.sum() * (total - NUM_CLASSES)
    counts = np.floor(shares).astype(np.int64)
    by_remainder = np.argsort(-(shares - counts), kind="stable")
    counts[by_remainder[: total - NUM_CLASSES - counts.sum()]] += 1
    return (counts + 1).tolist()


def write_synthetic_fer2013_csv(
    path: str | os.PathLike,
    num_train: int = 3000,
    num_val: int = 600,
    num_test: int = 600,
    seed: int = 0,
) -> Path:
    """Draw a synthetic FER2013 and write it atomically as a fer2013 csv; return its path.

    Deterministic for a given seed; each split uses its own random stream, so the validation and
    test rows do not change with ``num_train``.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    sizes = dict(zip(SPLITS, (num_train, num_val, num_test), strict=True))
    lines = [",".join(COLUMNS).encode() + b"\n"]
    for split_index, (usage, size) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, split_index])
        labels = np.repeat(np.arange(NUM_CLASSES), class_counts_for(size))
        rng.shuffle(labels)
        usage_suffix = f",{usage}\n".encode()
        for start in range(0, size, _BATCH):
            batch_labels = labels[start : start + _BATCH]
            images = _draw_faces(batch_labels, rng)
            lines += [
                b"%d,%s%s" % (label, pixels, usage_suffix)
                for label, pixels in zip(batch_labels, _format_pixels(images), strict=True)
            ]
    write_atomically(path, lambda file: file.writelines(lines))
    return path


def _format_pixels(images: np.ndarray) -> list[bytes]:
    """Format each image as its 2,304 space-separated decimal values, without Python per pixel.

    A table gives every value a 4-byte slot (digits, a space, zero padding); the padding is then
    dropped from each row's bytes.
    """
    rows = _PIXEL_SLOTS[images.reshape(len(images), NUM_PIXELS)]
    return [row.tobytes().replace(b"\0", b"")[:-1] for row in rows]


def _draw_faces(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one face per label: (N, 48, 48) uint8.

    Features are drawn in face coordinates ``(u, v)``: origin at the face centre, ``u`` to the
    right, ``v`` down, the face ellipse spanning about -0.8..0.8 by -1..1.
    """
    count = len(labels)

    def per_image(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(count, 1, 1)).astype(np.float32)

    features = (
        _CLASS_MEANS[labels]
        + rng.normal(size=(count, len(_FEATURES))).astype(np.float32) * _FEATURE_JITTER
    )
    curve, mouth_open, width, tilt, brow_slope, brow_raise, eye_open = (
        features[:, index, None, None] for index in range(len(_FEATURES))
    )
    mouth_open = np.maximum(mouth_open, 0.0)
    width = np.maximum(width, 0.08)
    eye_open = np.maximum(eye_open, 0.25)
    tilt = tilt * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(count, 1, 1))

    # pose: pixel grid -> face coordinates (rotation, scale, shift)
    angle = np.deg2rad(per_image(-12.0, 12.0))
    scale = per_image(17.0, 22.0)  # pixels per face unit
    centre_x = IMAGE_SIZE / 2 - 0.5 + per_image(-3.0, 3.0)
    centre_y = IMAGE_SIZE / 2 - 0.5 + per_image(-3.0, 3.0)
    grid_y, grid_x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    dx, dy = grid_x - centre_x, grid_y - centre_y
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / scale
    v = (dy * cos - dx * sin) / scale
    edge = 1.0 / scale  # one pixel, in face units: width of the anti-aliased borders

    def inside(signed_distance: np.ndarray) -> np.ndarray:
        """Soft mask from a signed distance (negative inside), one pixel wide at the border."""
        return np.clip(0.5 - signed_distance / edge, 0.0, 1.0)

    def paint(image: np.ndarray, mask: np.ndarray, tone: np.ndarray | float) -> np.ndarray:
        return image + mask * (tone - image)

    # background, face and hair
    image = per_image(0.1, 0.9) + per_image(-0.3, 0.3) * (grid_x / IMAGE_SIZE - 0.5)
    face = inside((np.sqrt((u / 0.8) ** 2 + v**2) - 1.0) * 0.9)
    image = paint(image, face, per_image(0.45, 0.85))
    hairline = per_image(-0.85, -0.6) + 0.15 * u**2
    image = paint(image, face * inside(v - hairline), per_image(0.05, 0.35))

    # eyes and brows, mirrored: side = -1 left, +1 right
    dark = per_image(0.02, 0.2)
    for side in (-1.0, 1.0):
        eye_u, eye_v = u - side * 0.33, v + 0.2
        eye = (eye_u / 0.14) ** 2 + (eye_v / (0.07 * eye_open)) ** 2
        image = paint(image, inside((np.sqrt(eye) - 1.0) * 0.07), dark)
        brow_u = u - side * 0.33
        inward = -side * brow_u  # > 0 towards the nose
        brow_centre = -0.45 - brow_raise + brow_slope * inward
        brow = inside(np.abs(v - brow_centre) - 0.045) * inside(np.abs(brow_u) - 0.17)
        image = paint(image, brow, dark)

    # nose: two nostrils
    for side in (-1.0, 1.0):
        nostril = np.sqrt(((u - side * 0.08) / 0.05) ** 2 + ((v - 0.22) / 0.035) ** 2)
        image = paint(image, inside((nostril - 1.0) * 0.035) * 0.7, dark)

    # mouth: a centre line that bends with the curve and tilt, opened into a lens
    along = np.clip(1.0 - (u / width) ** 2, 0.0, None)  # 1 at the centre, 0 at the corners
    centre_line = 0.5 + curve * along - tilt * np.clip(u / width, -1.0, 1.0) * 0.5 - tilt * 0.05
    half_height = 0.035 + mouth_open * np.sqrt(along)
    mouth = inside(np.abs(v - centre_line) - half_height) * inside(np.abs(u) - width)
    image = paint(image, mouth, dark * 0.8)

    # lighting, contrast, noise
    light_angle = per_image(0.0, 2 * np.pi)
    gradient = np.cos(light_angle) * (grid_x / IMAGE_SIZE - 0.5)
    gradient += np.sin(light_angle) * (grid_y / IMAGE_SIZE - 0.5)
    image *= 1.0 + per_image(0.0, 0.6) * gradient
    image = (image - 0.5) * per_image(0.6, 1.2) + 0.5 + per_image(-0.1, 0.1)
    image += rng.normal(size=image.shape).astype(np.float32) * per_image(0.01, 0.06)
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
