"""HAM10000-layout data: metadata validation, a lesion-grouped split, and images decoded once.

A data folder holds `HAM10000_metadata.csv` (lesion_id, image_id, dx, ...) and the images
`<image_id>.jpg` (or .png) anywhere below it, so the official `HAM10000_images_part_1/2` folders and a
single `images/` folder both work.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.classes import CODES

METADATA_NAME = "HAM10000_metadata.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataError(ValueError):
    """The data folder cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class Record:
    image_id: str
    lesion_id: str
    dx: str
    path: Path


def find_images(root: Path) -> dict[str, Path]:
    """image_id → file for every image below `root` (first one wins on duplicates)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)
    return found


def read_table(csv_path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a CSV file, after checking it parses and has the required columns."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {csv_path}: {exc}") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{csv_path} is not a usable metadata file: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(columns) or 'none'}).")
    return rows


def load_records(data_dir: str | Path, labels: tuple[str, ...] = CODES,
                 metadata: str | Path | None = None, need_lesion: bool = True) -> list[Record]:
    """Validated records of a data folder; raises DataError listing everything that is wrong."""
    data_dir = Path(data_dir)
    csv_path = Path(metadata) if metadata else data_dir / METADATA_NAME
    if not csv_path.is_file():
        raise DataError(f"No metadata file at {csv_path}: a HAM10000-style folder holds {METADATA_NAME}.")
    required = ("image_id", "dx") + (("lesion_id",) if need_lesion else ())
    rows = read_table(csv_path, required)
    images = find_images(data_dir)
    problems, records, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        image_id, dx = (row.get("image_id") or "").strip(), (row.get("dx") or "").strip()
        lesion_id = (row.get("lesion_id") or "").strip() or image_id
        if not image_id:
            problems.append(f"line {line}: empty image_id")
        elif image_id in seen:
            problems.append(f"line {line}: image_id {image_id} listed twice")
        elif dx not in labels:
            problems.append(f"line {line}: unknown dx '{dx}' for {image_id} (known: {', '.join(labels)})")
        elif image_id not in images:
            problems.append(f"line {line}: image {image_id} not found below {data_dir}")
        else:
            records.append(Record(image_id, lesion_id, dx, images[image_id]))
        seen.add(image_id)
    if not rows:
        problems.append("the metadata file has no rows")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DataError(f"{len(problems)} problem(s) in {csv_path}:\n  {shown}")
    return records


def grouped_split(records: list[Record], fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, str]:
    """image_id → "train" | "val" | "test", grouped by lesion_id and stratified by dx.

    All images of a lesion land in one split: HAM10000 has several photos of many lesions, and a
    split by image would let the test set grade the model on lesions it trained on.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    ids = np.array([r.image_id for r in records])
    y = np.array([r.dx for r in records])
    groups = np.array([r.lesion_id for r in records])
    assignment = {}
    # Test first: one fold of round(1 / test_fraction) folds.
    n_test = max(2, round(1 / fractions[2]))
    rest, test = next(StratifiedGroupKFold(n_test, shuffle=True, random_state=seed).split(ids, y, groups))
    assignment.update({i: "test" for i in ids[test]})
    n_val = max(2, round((1 - fractions[2]) / fractions[1]))
    tr, va = next(StratifiedGroupKFold(n_val, shuffle=True, random_state=seed + 1)
                  .split(ids[rest], y[rest], groups[rest]))
    assignment.update({i: "train" for i in ids[rest][tr]})
    assignment.update({i: "val" for i in ids[rest][va]})
    return assignment


def write_split(path: Path, records: list[Record], split: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "lesion_id", "dx", "split"])
        for r in records:
            writer.writerow([r.image_id, r.lesion_id, r.dx, split[r.image_id]])


def read_split(path: Path) -> dict[str, str]:
    return {row["image_id"]: row["split"] for row in read_table(path, ("image_id", "split"))}


def decode_all(records: list[Record], size: tuple[int, int], desc: str = "decode") -> np.ndarray:
    """N×H×W×3 uint8: every image decoded and resized once (to cover `size`, centre-cropped)."""
    from tqdm import tqdm

    from model.image_input import load_rgb
    from model.preprocess import DataConfig, crop_and_resize

    cfg = DataConfig((3, *size), (0, 0, 0), (1, 1, 1), crop_pct=1.0, interpolation="bicubic")
    out = np.empty((len(records), *size, 3), np.uint8)
    for i, r in enumerate(tqdm(records, desc=desc, leave=False, mininterval=2)):
        out[i] = crop_and_resize(load_rgb(r.path), cfg)[0]
    return out
