"""Explanations: Grad-CAM maps for every class and overlays drawn at the image's own size."""
from .analysis import Analysis, analyze
from .gradcam import cams_from_gradients, cams_from_linear_head, class_activation_maps
from .overlay import heatmap_rgb, overlay_heatmap

__all__ = ["Analysis", "analyze", "cams_from_gradients", "cams_from_linear_head", "class_activation_maps",
           "heatmap_rgb", "overlay_heatmap"]
