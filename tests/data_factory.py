"""A tiny synthetic dataset in HAM10000's layout, for training and evaluation tests.

Each class is a blob of its own hue and shape on a skin-toned, noisy background, so a small network
can tell the classes apart within a few epochs. Images come in lesion pairs (two photos share a
lesion_id), as in HAM10000, so a split by image would leak lesions and a grouped split must not.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from model.classes import CODES

METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
# Per class: blob colour (RGB) and shape; distinct enough to learn from a handful of images.
LOOKS = {
    "mel": ((40, 20, 20), "circle"),
    "akiec": ((200, 40, 40), "square"),
    "bcc": ((230, 200, 210), "ring"),
    "vasc": ((150, 0, 60), "triangle"),
    "df": ((120, 90, 30), "bar"),
    "bkl": ((60, 60, 160), "cross"),
    "nv": ((120, 70, 40), "ellipse"),
}
SKIN = np.array((224, 172, 140), np.float32)


def lesion_image(dx: str, rng: np.random.Generator, size: tuple[int, int] = (200, 150)) -> np.ndarray:
    """An H×W×3 uint8 RGB picture of a class-`dx` lesion (size is width, height)."""
    width, height = size
    image = np.clip(SKIN + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    colour, shape = LOOKS[dx]
    colour = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in colour)
    cx = int(width / 2 + rng.integers(-width // 10, width // 10 + 1))
    cy = int(height / 2 + rng.integers(-height // 10, height // 10 + 1))
    r = int(min(width, height) * rng.uniform(0.25, 0.35))
    if shape == "circle":
        cv2.circle(image, (cx, cy), r, colour, -1)
    elif shape == "square":
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif shape == "ring":
        cv2.circle(image, (cx, cy), r, colour, max(3, r // 3))
    elif shape == "triangle":
        points = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(image, [points], colour)
    elif shape == "bar":
        cv2.rectangle(image, (cx - r, cy - r // 3), (cx + r, cy + r // 3), colour, -1)
    elif shape == "cross":
        cv2.rectangle(image, (cx - r, cy - r // 4), (cx + r, cy + r // 4), colour, -1)
        cv2.rectangle(image, (cx - r // 4, cy - r), (cx + r // 4, cy + r), colour, -1)
    else:
        cv2.ellipse(image, (cx, cy), (r, r // 2), 30, 0, 360, colour, -1)
    return image


def write_metadata(path: Path, rows: list[dict], columns=METADATA_COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_ham_dataset(root: Path, per_class: int = 10, size: tuple[int, int] = (200, 150), seed: int = 0,
                      folders=("HAM10000_images_part_1", "HAM10000_images_part_2")) -> list[dict]:
    """Write JPEGs and HAM10000_metadata.csv below `root`; returns the metadata rows.

    Images are spread over `folders` as in the official download; two images per lesion.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    rows, n = [], 0
    for dx in CODES:
        for i in range(per_class):
            image_id, lesion_id = f"ISIC_{9000000 + n:07d}", f"HAM_{9000000 + n // 2:07d}"
            path = root / folders[n % len(folders)] / f"{image_id}.jpg"
            cv2.imwrite(str(path), lesion_image(dx, rng, size)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            rows.append({"lesion_id": lesion_id, "image_id": image_id, "dx": dx, "dx_type": "histo",
                         "age": str(30 + n % 50), "sex": ("male", "female")[n % 2], "localization": "back"})
            n += 1
    write_metadata(root / "HAM10000_metadata.csv", rows)
    return rows


def synthetic_records(lesions_per_class: dict[str, int], seed: int = 0) -> list:
    """training.data.Record rows without image files (for split tests): 1 to 3 images per lesion."""
    from training.data import Record

    rng = np.random.default_rng(seed)
    records, n, lesion = [], 0, 0
    for dx, count in lesions_per_class.items():
        for _ in range(count):
            for _ in range(int(rng.integers(1, 4))):
                image_id = f"ISIC_{8000000 + n:07d}"
                records.append(Record(image_id, f"HAM_{8000000 + lesion:07d}", dx, Path(f"{image_id}.jpg")))
                n += 1
            lesion += 1
    return records
