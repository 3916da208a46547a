"""One explained prediction: probabilities and Grad-CAM maps for every class, and their overlays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.classes import LesionClass, lesion_class
from model.inference import Classifier, Prediction

from .gradcam import class_activation_maps
from .overlay import overlay_heatmap


@dataclass(frozen=True)
class Analysis:
    prediction: Prediction
    cams: np.ndarray  # C×h×w in [0, 1], the checkpoint's label order

    @property
    def image(self) -> np.ndarray:
        return self.prediction.image

    @property
    def labels(self) -> tuple[str, ...]:
        return self.prediction.labels

    @property
    def probabilities(self) -> np.ndarray:
        return self.prediction.probabilities

    @property
    def top(self) -> LesionClass:
        return lesion_class(self.prediction.top_label)

    def ranked(self) -> list[tuple[LesionClass, float]]:
        """All classes, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")
        return [(lesion_class(self.labels[i]), float(self.probabilities[i])) for i in order]

    def overlay(self, label: str | None = None, opacity: float = 0.45) -> np.ndarray:
        """The heatmap of `label` (default: the top class) over the image, at the image's own size."""
        index = self.labels.index(label) if label else self.prediction.top_index
        return overlay_heatmap(self.image, self.cams[index], self.prediction.crop_box, opacity)


def analyze(classifier: Classifier, source) -> Analysis:
    """Predict one image and explain every class; raises model.ImageError for unusable input."""
    prediction = classifier.predict(source)
    return Analysis(prediction, class_activation_maps(classifier, prediction))
