"""Explain images from the command line, with the same functions as the app and the APIs.

    python -m explain photo.jpg [more.jpg ...] [--model SPEC] [--overlay-dir DIR] [--class CODE] [--json]

Prints every class's probability, most likely first (or one JSON object per image with --json), and
with --overlay-dir writes each image's Grad-CAM overlay as <name>.gradcam.png. Research and education
software: not a medical device and not a diagnosis.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model import ImageError, ModelLoadError, get_classifier

from .analysis import analyze


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, WebP, GIF, TIFF, BMP)")
    p.add_argument("--model", metavar="SPEC", help="checkpoint folder or Hub id (default: SKIN_MODEL, else "
                   "the bundled default_model/)")
    p.add_argument("--backend", choices=("torch", "onnx", "auto"), default=None)
    p.add_argument("--overlay-dir", type=Path, help="write <name>.gradcam.png overlays here")
    p.add_argument("--class", dest="target", metavar="CODE", help="class whose heatmap to draw "
                   "(default: the predicted one)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    a = p.parse_args(argv)
    try:
        classifier = get_classifier(a.model, a.backend)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.target and a.target not in classifier.labels:
        print(f"error: unknown class {a.target!r}; the model's classes are {', '.join(classifier.labels)}",
              file=sys.stderr)
        return 2
    if a.overlay_dir:
        a.overlay_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in a.images:
        try:
            analysis = analyze(classifier, path.read_bytes())
        except (OSError, ImageError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        overlay_path = None
        if a.overlay_dir:
            import cv2

            overlay_path = a.overlay_dir / f"{path.stem}.gradcam.png"
            cv2.imwrite(str(overlay_path), analysis.overlay(a.target)[..., ::-1])  # OpenCV writes BGR
        ranked = analysis.ranked()
        if a.json:
            print(json.dumps({"image": str(path), "predicted_label": analysis.top.code,
                              "probabilities": {c.code: round(p, 6) for c, p in ranked},
                              "overlay": str(overlay_path) if overlay_path else None}))
        else:
            print(f"{path}: {analysis.top.name} ({analysis.top.code}), severity {analysis.top.severity}")
            for c, prob in ranked:
                print(f"  {c.code:<6} {prob:7.2%}  {c.name}")
            if overlay_path:
                print(f"  overlay: {overlay_path}")
    if not a.json:
        print("Research and education software: not a medical device and not a diagnosis.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
