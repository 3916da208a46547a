"""In-process timings: forward, predict, analyze, the grad-cam package's route, and the report."""
from __future__ import annotations

import copy
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from explain import analyze
from model import Classifier, load_rgb
from model.preprocess import preprocess

CASE = dict(reference="BENCH-0001", age=54, sex="female", body_site="back",
            notes="Benchmark case: synthetic details.", referring_clinician="Dr Bench")


def timings_ms(steps: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, dict]:
    """{name: {"median_ms", "min_ms", "max_ms", "cpu_median_ms", "samples_ms"}}, steps run round-robin.

    Round-robin rather than one step at a time: a burst of load from other processes then slows
    every step alike instead of one, which keeps the ratios between steps honest. Sample i of every
    step comes from round i, so ratios can also be taken within rounds (bench.summary's paired ones).
    cpu_median_ms is the CPU time this process used (all threads): unlike wall time it barely grows
    when other processes take the cores, so it shows the work itself on a busy machine.

    The steps run in a worker thread, as the server runs them (FastAPI and Gradio call the analysis
    in worker threads): PyTorch's CPU threading differs between the main thread and other threads.
    """
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(_timings_ms, steps, runs, warmup).result()


def _timings_ms(steps: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, dict]:
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    order, shuffle = list(steps.items()), random.Random(0).shuffle
    for _ in range(runs):
        # A new order each round: a step's speed depends on what ran just before it (caches, whether
        # PyTorch's worker threads are awake), so no step may always follow the same one.
        shuffle(order)
        for name, fn in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - start) * 1000.0)
            cpu[name].append((time.process_time() - start_cpu) * 1000.0)
    return {name: {"median_ms": round(statistics.median(s), 3), "min_ms": round(min(s), 3),
                   "max_ms": round(max(s), 3), "cpu_median_ms": round(statistics.median(cpu[name]), 3),
                   "samples_ms": [round(x, 3) for x in s]}
            for name, s in wall.items()}


def onnx_twin(classifier: Classifier) -> tuple[Classifier, dict]:
    """A second classifier sharing the torch model but running forward passes in ONNX Runtime."""
    from model.onnx_backend import load_session

    start = time.perf_counter()
    session, path, exported = load_session(classifier)
    twin = copy.copy(classifier)
    twin.use_onnx(session)
    return twin, {"onnx_path": str(path), "exported_now": exported,
                  "load_s": round(time.perf_counter() - start, 3)}


def app_steps(classifier: Classifier, image_bytes: bytes) -> dict[str, Callable[[], object]]:
    """The app's own work on one upload, step by growing step."""
    batch, _ = preprocess(load_rgb(image_bytes), classifier.data_config)

    def explain():
        analysis = analyze(classifier, image_bytes)
        return analysis, analysis.overlay()  # what /inference and the UI show: the top class's overlay

    return {"forward": lambda: classifier.forward(batch),
            "predict": lambda: classifier.predict(image_bytes),
            "analyze": explain}


class GradCamRoute:
    """The same explanation computed with the `grad-cam` package (pytorch-grad-cam), as peers do it.

    Same model (a copy, so the package's hooks never touch the app's model), same layer (the output of
    forward_features, marked by an Identity module the package can hook), same decoding, preprocessing
    and overlay as the app; only the class activation maps come from the package (forward + backward).
    """

    def __init__(self, classifier: Classifier):
        import torch
        from pytorch_grad_cam import GradCAM

        class FeaturesThenHead(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model
                self.features = torch.nn.Identity()  # the last feature map, as the app's Grad-CAM uses it

            def forward(self, x):
                return self.model.forward_head(self.features(self.model.forward_features(x)))

        self.classifier = classifier
        self.model = FeaturesThenHead(copy.deepcopy(classifier.model).cpu()).eval()
        self.cam = GradCAM(model=self.model, target_layers=[self.model.features])

    def __call__(self, image_bytes: bytes, all_classes: bool) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, C×H×W maps at the input size) and the top class's overlay, from an upload."""
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from explain import overlay_heatmap
        from model import softmax

        image = load_rgb(image_bytes)
        batch, box = preprocess(image, self.classifier.data_config)
        x = torch.from_numpy(batch)
        if all_classes:
            maps = [self.cam(x, targets=[ClassifierOutputTarget(c)])[0] for c in range(len(self.classifier.labels))]
        else:
            maps = [self.cam(x, targets=None)[0]]  # the package's default: the top class only
        probabilities = softmax(self.cam.outputs.detach().numpy()[0], self.classifier.temperature)
        top = int(np.argmax(probabilities))
        overlay_heatmap(image, maps[top if all_classes else 0], box)
        return probabilities, np.stack(maps)


def gradcam_agreement(classifier: Classifier, route: GradCamRoute, image_bytes: bytes) -> float:
    """Largest difference between the app's maps (resized to the input) and the package's, all classes.

    Near zero means both compute the same Grad-CAM, so their timings compare the same work.
    """
    import cv2

    ours = analyze(classifier, image_bytes).cams
    _, theirs = route(image_bytes, all_classes=True)
    height, width = theirs.shape[1:]
    resized = np.stack([cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR) for cam in ours])
    # The package scales each map to [0, 1] again after resizing; so do we, to compare like with like.
    low, high = resized.min(axis=(1, 2), keepdims=True), resized.max(axis=(1, 2), keepdims=True)
    resized = (resized - low) / (high - low + 1e-7)
    return float(np.abs(resized - theirs).max())


def report_step(classifier: Classifier, image_bytes: bytes) -> Callable[[], bytes]:
    """Building the PDF report of an analysis made beforehand (the report alone)."""
    from report import CaseFields, build_report

    analysis = analyze(classifier, image_bytes)
    case = CaseFields(**CASE)
    return lambda: build_report(analysis, classifier.info, case, "A4",
                                checkpoint_dir=classifier.checkpoint.directory, image_bytes=image_bytes)
