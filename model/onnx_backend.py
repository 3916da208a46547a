"""Run a classifier's forward pass through ONNX Runtime on the CPU instead of PyTorch.

The exported graph returns both the logits and the last feature map, so Grad-CAM (which only needs the
features and the linear head) costs nothing extra. Graphs are cached: beside a local checkpoint as
`model.onnx`, else (a Hub snapshot, a read-only folder) in ~/.cache/skin-lesion/onnx/<sha256>.onnx.
The weights' sha256 is stored in the graph's metadata and checked on every load, so a retrained
checkpoint never runs a stale graph. Every fresh export is checked against PyTorch before it is used.

Backends: "onnx" always uses ONNX Runtime; "auto" times both on a batch-1 input at load and keeps the
faster. The choice and both timings are kept in `classifier.backend_choice`.

    python -m model.onnx_backend export [SPEC] [--force]
"""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
# Bumped whenever the exported graph's contract (inputs, outputs, their order) changes.
GRAPH_FORMAT = "skin-lesion/logits+features/1"
OPSET = 17
# Probabilities from ONNX Runtime must match PyTorch's this closely, or the export is not used.
PROBABILITY_TOLERANCE = 1e-4
BACKENDS = ("torch", "onnx", "auto")


def user_cache_dir() -> Path:
    """Where graphs go when the checkpoint's own folder cannot take them."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skin-lesion" / "onnx"


def cache_candidates(classifier) -> list[Path]:
    """Where a classifier's graph may be cached, in order of preference.

    Beside the checkpoint only for a local, writable folder: a Hub snapshot belongs to the HF cache.
    """
    directory = classifier.checkpoint.directory
    user = user_cache_dir() / f"{classifier.weights_sha256}.onnx"
    if classifier.checkpoint.revision == "local" and os.access(directory, os.W_OK):
        return [directory / ONNX_NAME, user]
    return [user]


def _expected_metadata(classifier) -> dict[str, str]:
    return {"weights_sha256": classifier.weights_sha256, "format": GRAPH_FORMAT,
            "input_size": "x".join(map(str, classifier.data_config.input_size)),
            "architecture": str(classifier.checkpoint.config["architecture"])}


def graph_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read without loading its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def is_current(path: Path, classifier) -> bool:
    """True when `path` holds a graph exported from exactly this checkpoint's weights and input size."""
    if not path.is_file():
        return False
    try:
        metadata = graph_metadata(path)
    except Exception:  # truncated or foreign file: treat as absent
        return False
    expected = _expected_metadata(classifier)
    return all(metadata.get(k) == v for k, v in expected.items())


def _logits_and_features(model):
    """A module whose forward is forward_features then forward_head, returning both (torch imported here)."""
    import torch

    class LogitsAndFeatures(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            features = self.inner.forward_features(x)
            return self.inner.forward_head(features), features

    return LogitsAndFeatures(model).eval()


def export_onnx(classifier, path: Path) -> Path:
    """Export the classifier to `path` (outputs "logits", "features"; dynamic batch), atomically.

    Uses PyTorch's TorchScript-based exporter (dynamo=False): it needs no extra package (the dynamo
    exporter needs onnxscript), exports a CNN in seconds, and traces these static graphs exactly.
    """
    import warnings

    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(classifier.model.parameters()).device
    dummy = torch.zeros((1, *classifier.data_config.input_size), dtype=torch.float32, device=device)
    wrapper = _logits_and_features(classifier.model)
    # A temporary file in the same folder, then a rename: readers never see a half-written graph.
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer chatter
            torch.onnx.export(wrapper, (dummy,), tmp, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["logits", "features"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"},
                                            "features": {0: "batch"}},
                              do_constant_folding=True)
        graph = onnx.load(tmp)
        for key, value in _expected_metadata(classifier).items():
            graph.metadata_props.add(key=key, value=value)
        graph.producer_name = "skin-lesion model.onnx_backend"
        onnx.save(graph, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the graph is no secret
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def create_session(path: Path):
    """An ONNX Runtime CPU session using every core, with all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = _cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle threads would otherwise spin after each run and starve the image work that follows it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _probe_input(classifier) -> np.ndarray:
    """A batch-1 model input; a CNN's cost does not depend on the pixel values."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((1, *classifier.data_config.input_size)).astype(np.float32)


def matches_torch(classifier, session, batch: np.ndarray | None = None) -> tuple[bool, float]:
    """Whether the session's probabilities equal PyTorch's within PROBABILITY_TOLERANCE (and the gap)."""
    from .inference import softmax

    batch = _probe_input(classifier) if batch is None else batch
    torch_logits, _ = classifier._forward_torch(batch)
    onnx_logits, _ = session.run(None, {"input": batch})
    gap = float(np.abs(softmax(torch_logits, classifier.temperature)
                       - softmax(onnx_logits, classifier.temperature)).max())
    return gap <= PROBABILITY_TOLERANCE, gap


def load_session(classifier, force_export: bool = False):
    """The cached graph's session, exporting (and checking) it first when missing or stale.

    Returns (session, path, exported: bool). Raises RuntimeError when a fresh export disagrees with
    PyTorch, or OSError when no cache location is writable.
    """
    candidates = cache_candidates(classifier)
    if not force_export:
        for path in candidates:
            if is_current(path, classifier):
                return create_session(path), path, False
    errors = []
    for path in candidates:
        try:
            export_onnx(classifier, path)
        except OSError as exc:  # read-only despite appearances: try the next place
            errors.append(f"{path}: {exc}")
            continue
        session = create_session(path)
        ok, gap = matches_torch(classifier, session)
        if not ok:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"The ONNX export of {classifier.checkpoint.model_id} differs from PyTorch "
                               f"(probabilities up to {gap:.2e} apart, allowed {PROBABILITY_TOLERANCE}).")
        log.info("Exported %s to %s", classifier.checkpoint.model_id, path)
        return session, path, True
    raise OSError("No writable place for the ONNX graph: " + "; ".join(errors))


def _median_ms(fn, batch: np.ndarray, runs: int) -> float:
    fn(batch)  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def enable_onnx(classifier, backend: str = "onnx", runs: int = 5) -> None:
    """Switch `classifier` to ONNX Runtime ("onnx"), or to whichever is faster here ("auto").

    With "auto", a failed export keeps PyTorch (and says why in backend_choice); with "onnx" it raises.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return
    start = time.perf_counter()
    try:
        session, path, exported = load_session(classifier)
    except (OSError, RuntimeError) as exc:
        if backend == "onnx":
            raise
        classifier.backend_choice = {"requested": "auto", "chosen": "torch",
                                     "reason": f"ONNX unavailable: {exc}"}
        log.warning("Using PyTorch: %s", exc)
        return
    choice = {"requested": backend, "onnx_path": str(path), "exported": exported,
              "onnx_load_s": round(time.perf_counter() - start, 3)}
    if backend == "auto":
        batch = _probe_input(classifier)
        onnx_ms = _median_ms(lambda b: session.run(None, {"input": b}), batch, runs)
        torch_ms = _median_ms(classifier._forward_torch, batch, runs)
        chosen = "onnx" if onnx_ms < torch_ms else "torch"
        choice.update(chosen=chosen, onnx_ms=round(onnx_ms, 3), torch_ms=round(torch_ms, 3),
                      reason=f"median of {runs} batch-1 forward passes: ONNX Runtime {onnx_ms:.1f} ms, "
                             f"PyTorch {torch_ms:.1f} ms")
    else:
        choice.update(chosen="onnx", reason="requested")
    classifier.backend_choice = choice
    if choice["chosen"] == "onnx":
        classifier.use_onnx(session)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .checkpoint import resolve
    from .inference import Classifier

    parser = argparse.ArgumentParser(prog="python -m model.onnx_backend", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export (or refresh) the cached ONNX graph of a checkpoint")
    export.add_argument("spec", nargs="?", default=None, help="checkpoint folder or Hub id (default: bundled)")
    export.add_argument("--force", action="store_true", help="export even when the cached graph is current")
    args = parser.parse_args(argv)

    classifier = Classifier(resolve(args.spec), device="cpu")
    session, path, exported = load_session(classifier, force_export=args.force)
    _, gap = matches_torch(classifier, session)
    print(f"{'exported' if exported else 'already current'}: {path}\n"
          f"weights sha256 {classifier.weights_sha256}; max probability gap to PyTorch {gap:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
