"""Run a classifier's forward pass through ONNX Runtime on the CPU instead of PyTorch.

The exported graph returns both the logits and the last feature map, so Grad-CAM (which only needs the
features and the linear head) costs nothing extra. Graphs are cached: beside a local checkpoint as
`model.onnx`, else (a Hub snapshot, a read-only folder) in ~/.cache/skin-lesion/onnx/<sha256>.onnx.
The weights' sha256 is stored in the graph's metadata and checked on every load, so a retrained
checkpoint never runs a stale graph. Every fresh export is checked against PyTorch before it is used.

Backends: "torch" (the default), "onnx" (always ONNX Runtime), "auto" (whichever is faster here).
"auto" compares the median of interleaved batch-1 forward passes of both, once per graph and machine:
the result is stored beside the graph (`<graph>.timing.json`, keyed by CPU, core count and library
versions) so later starts reuse it instead of paying for the measurement again; `measure` refreshes
it. The choice and the timings it rests on are kept in `classifier.backend_choice`.

    python -m model.onnx_backend export [SPEC] [--force]   # export now (else: on first use)
    python -m model.onnx_backend measure [SPEC]            # time both backends, store, print the choice
"""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
TIMING_SUFFIX = ".timing.json"
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


def session_metadata(session) -> dict[str, str]:
    """The metadata stored in the graph an ONNX Runtime session runs."""
    return dict(session.get_modelmeta().custom_metadata_map)


def is_current(metadata: dict[str, str], classifier) -> bool:
    """True when graph metadata says it was exported from exactly this checkpoint's weights and input size."""
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
    options.intra_op_num_threads = available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle threads would otherwise spin after each run and starve the image work that follows it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def available_cores() -> int:
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
            if not path.is_file():
                continue
            try:
                session = create_session(path)
            except Exception:  # truncated or foreign file: export over it
                continue
            if is_current(session_metadata(session), classifier):
                return session, path, False
    errors = []
    for path in candidates:
        try:
            export_onnx(classifier, path)
        except OSError as exc:  # read-only despite appearances: try the next place
            errors.append(f"{path}: {exc}")
            continue
        timing_path(path).unlink(missing_ok=True)  # measured on the graph this export replaced
        session = create_session(path)
        ok, gap = matches_torch(classifier, session)
        if not ok:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"The ONNX export of {classifier.checkpoint.model_id} differs from PyTorch "
                               f"(probabilities up to {gap:.2e} apart, allowed {PROBABILITY_TOLERANCE}).")
        log.info("Exported %s to %s", classifier.checkpoint.model_id, path)
        return session, path, True
    raise OSError("No writable place for the ONNX graph: " + "; ".join(errors))


# --- Which backend is faster here ----------------------------------------------------------------

def timing_path(graph: Path) -> Path:
    return Path(str(graph) + TIMING_SUFFIX)


def machine_fingerprint() -> str:
    """What a timing depends on besides the model: the CPU, the cores this process may use, the libraries."""
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu} | {available_cores()} cores | torch {torch.__version__} {torch.get_num_threads()} threads | "
            f"onnxruntime {onnxruntime.__version__}")


def measure(classifier, session, runs: int = 7) -> tuple[float, float]:
    """Median batch-1 forward time in ms of (ONNX Runtime, PyTorch), runs interleaved after a warm-up.

    Interleaving makes both backends share whatever else the machine is doing at the time.
    """
    batch = _probe_input(classifier)
    backends = (lambda b: session.run(None, {"input": b}), classifier._forward_torch)
    samples: tuple[list[float], list[float]] = ([], [])
    for fn in backends:  # warm-up: first calls allocate and pick kernels
        fn(batch)
    for _ in range(runs):
        for fn, times in zip(backends, samples):
            start = time.perf_counter()
            fn(batch)
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples[0]), statistics.median(samples[1])


def stored_timing(graph: Path, classifier, fingerprint: str) -> dict | None:
    """The stored measurement for this graph's weights on this machine, if any."""
    try:
        record = json.loads(timing_path(graph).read_text()).get(fingerprint)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(record, dict) or record.get("weights_sha256") != classifier.weights_sha256:
        return None
    if not all(isinstance(record.get(k), (int, float)) for k in ("onnx_ms", "torch_ms")):
        return None
    return record


def store_timing(graph: Path, fingerprint: str, record: dict) -> None:
    """Keep a measurement for later starts; a read-only cache only means measuring again next time."""
    path = timing_path(graph)
    try:
        try:
            records = json.loads(path.read_text())
            records = records if isinstance(records, dict) else {}
        except (OSError, ValueError):
            records = {}
        records[fingerprint] = record
        fd, tmp = tempfile.mkstemp(prefix=".timing-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(records, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("Backend timing not stored (%s)", exc)


def backend_timing(classifier, session, graph: Path, runs: int = 7, remeasure: bool = False) -> dict:
    """{"onnx_ms", "torch_ms", "measured_at", "stored"}: stored for this machine, else measured now."""
    fingerprint = machine_fingerprint()
    record = None if remeasure else stored_timing(graph, classifier, fingerprint)
    if record is not None:
        return {**record, "stored": True}
    onnx_ms, torch_ms = measure(classifier, session, runs)
    record = {"onnx_ms": round(onnx_ms, 3), "torch_ms": round(torch_ms, 3), "runs": runs,
              "weights_sha256": classifier.weights_sha256,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    store_timing(graph, fingerprint, record)
    return {**record, "stored": False}


def faster_backend(onnx_ms: float, torch_ms: float) -> str:
    """ONNX Runtime only when measured faster; a tie keeps the reference implementation."""
    return "onnx" if onnx_ms < torch_ms else "torch"


def enable_onnx(classifier, backend: str = "onnx", runs: int = 7, remeasure: bool = False) -> None:
    """Switch `classifier` to ONNX Runtime ("onnx"), or to whichever is faster here ("auto").

    With "auto", a failed export keeps PyTorch (and says why in backend_choice); with "onnx" it raises.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        classifier.backend_choice = {"requested": "torch", "chosen": "torch", "reason": "requested"}
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
        timing = backend_timing(classifier, session, path, runs, remeasure)
        chosen = faster_backend(timing["onnx_ms"], timing["torch_ms"])
        source = "stored measurement" if timing["stored"] else "measured now"
        choice.update(chosen=chosen, onnx_ms=timing["onnx_ms"], torch_ms=timing["torch_ms"],
                      reason=f"{source} ({timing.get('measured_at', '?')}): median batch-1 forward pass "
                             f"ONNX Runtime {timing['onnx_ms']:.1f} ms, PyTorch {timing['torch_ms']:.1f} ms")
    else:
        choice.update(chosen="onnx", reason="requested")
    classifier.backend_choice = choice
    if choice["chosen"] == "onnx":
        classifier.use_onnx(session)
    log.info("Backend %s: %s", choice["chosen"], choice["reason"])


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .checkpoint import resolve
    from .inference import Classifier

    parser = argparse.ArgumentParser(prog="python -m model.onnx_backend", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export (or refresh) the cached ONNX graph of a checkpoint")
    export.add_argument("spec", nargs="?", default=None, help="checkpoint folder or Hub id (default: bundled)")
    export.add_argument("--force", action="store_true", help="export even when the cached graph is current")
    timing = commands.add_parser("measure", help="time both backends here, store the result for --backend auto")
    timing.add_argument("spec", nargs="?", default=None, help="checkpoint folder or Hub id (default: bundled)")
    timing.add_argument("--runs", type=int, default=15, help="forward passes per backend (default: 15)")
    args = parser.parse_args(argv)

    classifier = Classifier(resolve(args.spec), device="cpu")
    session, path, exported = load_session(classifier, force_export=getattr(args, "force", False))
    if args.command == "export":
        _, gap = matches_torch(classifier, session)
        print(f"{'exported' if exported else 'already current'}: {path}\n"
              f"weights sha256 {classifier.weights_sha256}; max probability gap to PyTorch {gap:.1e}")
    else:
        result = backend_timing(classifier, session, path, args.runs, remeasure=True)
        print(f"ONNX Runtime {result['onnx_ms']:.1f} ms, PyTorch {result['torch_ms']:.1f} ms (median batch-1 "
              f"forward of {args.runs}): --backend auto uses {faster_backend(result['onnx_ms'], result['torch_ms'])}"
              f"\nstored in {timing_path(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
