"""Model concerns: the class table, checkpoint loading, image decoding, preprocessing and prediction."""
from .checkpoint import DEFAULT_MODEL_DIR, Checkpoint, ModelLoadError, default_spec, resolve
from .classes import BY_CODE, CLASSES, CODES, LesionClass, lesion_class
from .image_input import ImageError, load_image, load_rgb
from .inference import Classifier, Prediction, get_classifier, softmax

__all__ = ["BY_CODE", "CLASSES", "CODES", "DEFAULT_MODEL_DIR", "Checkpoint", "Classifier", "ImageError",
           "LesionClass", "ModelLoadError", "Prediction", "default_spec", "get_classifier",
           "lesion_class", "load_image", "load_rgb", "resolve", "softmax"]
