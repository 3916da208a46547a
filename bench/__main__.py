"""python -m bench: measure this machine, print the table, write the JSON (see bench/__init__.py)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "examples" / "ISIC_0024496.jpg"  # a 600x450 example photo, like most uploads
SCHEMA = "skin-lesion-bench/1"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--model", metavar="SPEC", default=None,
                        help="checkpoint folder or Hub id (default: env SKIN_MODEL, else default_model/)")
    parser.add_argument("--backends", default="torch,onnx", help="comma-separated: torch, onnx (default: both)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the upload to time (default: an example)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per step (default 100; 3 with --quick)")
    parser.add_argument("--requests", type=int, default=None,
                        help="warm /inference round trips per server (default 20; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="few runs: checks the benchmark works, numbers are rough")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: bench-results/<model>-<backends>-<time>.json)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or set(args.backends) - {"torch", "onnx"}:
        parser.error("--backends takes torch, onnx or torch,onnx")
    args.runs = args.runs or (3 if args.quick else 100)
    args.requests = args.requests or (3 if args.quick else 20)
    args.warmup = 1 if args.quick else 3
    return args


def machine() -> dict:
    import onnxruntime
    import torch

    from model.onnx_backend import available_cores, machine_fingerprint

    return {"cpu": machine_fingerprint().split(" | ")[0], "cores": available_cores(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "load_average_start": _load()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(args) -> dict:
    from PIL import Image

    from model import Classifier, resolve

    from . import measure, serve, summary

    image_bytes = args.image.read_bytes()
    with Image.open(args.image) as im:
        width, height = im.size
    checkpoint = resolve(args.model)
    spec = str(checkpoint.directory) if checkpoint.revision == "local" else args.model
    classifier = Classifier(checkpoint, device="cpu")
    result = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python -m bench " + " ".join(sys.argv[1:]), "machine": machine(),
              "model": {**classifier.info, "input_size": list(classifier.data_config.input_size),
                        "labels": list(classifier.labels)},
              "image": {"path": str(args.image), "width": width, "height": height, "bytes": len(image_bytes)},
              "settings": {"runs": args.runs, "warmup": args.warmup, "requests": args.requests, "quick": args.quick,
                           "backends": args.backends, "servers_side_by_side": args.quick,
                           "timed_in": "a worker thread, as the server runs the analysis"},
              "backends": {}, "errors": {}}

    classifiers = {"torch": classifier} if "torch" in args.backends else {}
    if "onnx" in args.backends:
        classifiers["onnx"], result["onnx_graph"] = measure.onnx_twin(classifier)
    route = measure.GradCamRoute(classifier)
    steps = {}
    for backend, c in classifiers.items():
        steps.update({f"{backend}.{name}": fn for name, fn in measure.app_steps(c, image_bytes).items()})
    steps["pytorch_grad_cam.top_class"] = lambda: route(image_bytes, all_classes=False)
    steps["report"] = measure.report_step(classifier, image_bytes)
    print(f"timing {len(steps)} steps, {args.runs} runs each ...", file=sys.stderr, flush=True)
    timed = measure.timings_ms(steps, args.runs, args.warmup)
    # Seven backward passes per run: fewer runs keep the whole benchmark within minutes.
    timed.update(measure.timings_ms({"pytorch_grad_cam.all_classes": lambda: route(image_bytes, all_classes=True)},
                                    max(1, args.runs // 4), 1))
    for backend in classifiers:
        result["backends"][backend] = {name: timed[f"{backend}.{name}"] for name in ("forward", "predict", "analyze")}
    result["pytorch_grad_cam"] = {"top_class": timed["pytorch_grad_cam.top_class"],
                                  "all_classes": timed["pytorch_grad_cam.all_classes"],
                                  "max_abs_diff_vs_app": measure.gradcam_agreement(classifier, route, image_bytes)}
    result["report"] = timed["report"]

    # --quick starts the servers side by side (a smoke test's minute matters more than its numbers).
    from concurrent.futures import ThreadPoolExecutor

    def server(backend):
        try:
            return serve.measure_server(spec, backend, image_bytes, args.requests, start_timeout=300.0), None
        except Exception as exc:  # noqa: BLE001  (recorded: the rest of the results still stand)
            return None, f"{exc.__class__.__name__}: {exc}"

    print(f"starting the server ({', '.join(classifiers)}) ...", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=len(classifiers) if args.quick else 1) as pool:
        for backend, (measured, error) in zip(classifiers, pool.map(server, list(classifiers))):
            result["backends"][backend]["server"] = measured
            if error:
                result["errors"][f"{backend}.server"] = error
    result["machine"]["load_average_end"] = _load()
    result["ratios"] = summary.ratios(result)
    result["ratios_cpu"] = summary.ratios(result, "cpu_median_ms")
    result["targets"] = summary.targets(result)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from model import ModelLoadError

    from .summary import table

    try:
        result = run(args)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPO_ROOT / "bench-results" / (
        f"{result['model']['id']}-{'-'.join(args.backends)}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"\nwritten: {out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
