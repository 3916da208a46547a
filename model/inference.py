"""A loaded checkpoint that turns RGB images into class probabilities and the last feature map.

Every caller (the app, the REST API, the evaluation, the benchmark) predicts through `Classifier`, so
preprocessing, temperature and label order are applied one way everywhere.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import numpy as np

from .checkpoint import Checkpoint, ModelLoadError, file_sha256, resolve
from .image_input import load_rgb
from .preprocess import DataConfig, crop_and_resize, normalize, preprocess

try:  # On a ZeroGPU Space the GPU is attached only inside functions decorated with spaces.GPU.
    import spaces
    _gpu = spaces.GPU
except ImportError:
    def _gpu(fn):
        return fn


@dataclass(frozen=True)
class Prediction:
    """One image's result. `features` is the last spatial feature map (K×h×w), kept for Grad-CAM."""
    image: np.ndarray                # the RGB uint8 image as uploaded (H×W×3)
    labels: tuple[str, ...]          # class codes in the checkpoint's output order
    logits: np.ndarray               # C, before temperature
    probabilities: np.ndarray        # C, softmax(logits / temperature)
    features: np.ndarray             # K×h×w
    crop_box: tuple[int, int, int, int]  # the region of `image` the model saw

    @property
    def top_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def top_label(self) -> str:
        return self.labels[self.top_index]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Classifier:
    """A checkpoint loaded into a timm model (or its ONNX export) ready to predict."""

    def __init__(self, checkpoint: Checkpoint, device: str | None = None):
        import timm
        import torch

        self.checkpoint = checkpoint
        self.labels = tuple(checkpoint.label_names)
        self.temperature = checkpoint.temperature
        try:
            # timm reads config.json (architecture, model_args, pretrained_cfg) and model.safetensors.
            model = timm.create_model(f"local-dir:{checkpoint.directory}", pretrained=True)
        except Exception as exc:
            raise ModelLoadError(f"The checkpoint in {checkpoint.directory} could not be built by timm "
                                 f"({exc.__class__.__name__}: {exc}).") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device)
        self.data_config = DataConfig.from_timm(timm.data.resolve_data_config({}, model=model))
        self.weights_sha256 = file_sha256(checkpoint.weights_path)
        self.linear_head = _linear_head(model)
        self.backend = "torch"
        # Why this backend runs: set by model.onnx_backend.enable_onnx (with timings for "auto").
        self.backend_choice = {"requested": "torch", "chosen": "torch", "reason": "default"}
        self._onnx = None

    @property
    def info(self) -> dict:
        return {"id": self.checkpoint.model_id, "revision": self.checkpoint.revision,
                "sha256": self.weights_sha256, "architecture": self.checkpoint.config["architecture"],
                "backend": self.backend}

    def use_onnx(self, session) -> None:
        """Run forward passes through an ONNX Runtime session that returns (logits, features)."""
        self._onnx, self.backend = session, "onnx"

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N×3×H×W float32 → (logits N×C, last feature map N×K×h×w), both float32 numpy."""
        if self._onnx is not None:
            logits, features = self._onnx.run(None, {"input": batch})
            return logits, features
        return self._forward_torch(batch)

    @_gpu
    def _forward_torch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        amp = torch.autocast("cuda", dtype=torch.float16) if self.device == "cuda" \
            else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            features = self.model.forward_features(x)
            logits = self.model.forward_head(features)
        return logits.float().cpu().numpy(), features.float().cpu().numpy()

    def predict(self, source) -> Prediction:
        """Classify one image (anything `load_rgb` accepts)."""
        image = load_rgb(source)
        batch, box = preprocess(image, self.data_config)
        logits, features = self.forward(batch)
        return Prediction(image, self.labels, logits[0], softmax(logits[0], self.temperature),
                          features[0], box)

    def logits(self, images, batch_size: int = 32) -> np.ndarray:
        """N×C logits for a sequence of images (for evaluation); same preprocessing as predict."""
        out = []
        for start in range(0, len(images), batch_size):
            views = [crop_and_resize(load_rgb(im), self.data_config)[0]
                     for im in images[start:start + batch_size]]
            out.append(self.forward(normalize(np.stack(views), self.data_config))[0])
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict_probabilities(self, images, batch_size: int = 32) -> np.ndarray:
        """N×C probabilities for a sequence of images, with the checkpoint's temperature."""
        return softmax(self.logits(images, batch_size), self.temperature)


def _linear_head(model):
    """(W, b) when the head is global average pooling then one linear layer, else None.

    Checked numerically rather than by type, so any timm CNN whose forward_head reduces to
    linear(mean(features)) gets the free Grad-CAM path and every other head the gradient path.
    """
    import torch

    fc = model.get_classifier()
    if not isinstance(fc, torch.nn.Linear):
        return None
    with torch.no_grad():
        probe = torch.randn(2, fc.in_features, 3, 5, device=next(model.parameters()).device)
        try:
            same = torch.allclose(model.forward_head(probe), fc(probe.mean((2, 3))), atol=1e-4, rtol=1e-4)
        except RuntimeError:
            return None
    if not same:
        return None
    bias = fc.bias if fc.bias is not None else torch.zeros(fc.out_features)
    return fc.weight.detach().float().cpu().numpy(), bias.detach().float().cpu().numpy()


@functools.lru_cache(maxsize=4)
def get_classifier(spec: str | None = None, backend: str | None = None) -> Classifier:
    """The process-wide classifier for a spec: the model is loaded once per process and backend."""
    classifier = Classifier(resolve(spec))
    backend = backend or os.environ.get("SKIN_BACKEND", "torch")
    if backend != "torch":
        from .onnx_backend import enable_onnx
        enable_onnx(classifier, backend)
    return classifier
