"""Grad-CAM maps for all classes, checked against pytorch-grad-cam, and overlays at the upload's own size."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from conftest import write_tiny_checkpoint
from explain import analyze, cams_from_gradients, cams_from_linear_head, overlay_heatmap
from model import Classifier, resolve
from model.preprocess import preprocess
from training.export import export_checkpoint


@pytest.fixture(scope="module")
def cam_classifier(tmp_path_factory):
    """A checkpoint whose last feature map is 6×8, so the maps have structure worth comparing."""
    return Classifier(resolve(write_tiny_checkpoint(tmp_path_factory.mktemp("cam"), input_size=(3, 192, 256))),
                      device="cpu")


@pytest.fixture(scope="module")
def max_pool_classifier(tmp_path_factory):
    """A head that is not average pooling + linear: Grad-CAM must take the gradient path."""
    import timm
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=7, global_pool="max", pretrained_cfg_overlay=dict(
        input_size=(3, 192, 256), crop_pct=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    directory = tmp_path_factory.mktemp("maxpool")
    export_checkpoint(model, directory, ["mel", "akiec", "bcc", "vasc", "df", "bkl", "nv"])
    return Classifier(resolve(directory), device="cpu")


@pytest.fixture(scope="module")
def mel_image(mel_600x450) -> np.ndarray:
    return np.asarray(Image.open(mel_600x450).convert("RGB"))


def reference_cams(classifier, image: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam on the same model, layer (the last feature map) and each class, at input size."""
    batch, _ = preprocess(image, classifier.data_config)
    n = len(classifier.labels)
    x = torch.from_numpy(np.repeat(batch, n, axis=0))
    with GradCAM(model=classifier.model, target_layers=[classifier.model.layer4]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in range(n)])


def assert_agrees_with_reference(ours: np.ndarray, reference: np.ndarray, input_hw) -> None:
    for c, (mine, theirs) in enumerate(zip(ours, reference)):
        upsampled = cv2.resize(mine, input_hw[::-1], interpolation=cv2.INTER_LINEAR)
        if theirs.max() < 1e-6:  # no positive evidence for this class anywhere: both maps are empty
            assert mine.max() < 1e-6, c
        else:
            assert np.corrcoef(upsampled.ravel(), theirs.ravel())[0, 1] > 0.99, c


def test_maps_for_every_class_have_the_feature_map_shape_and_unit_range(cam_classifier, mel_image):
    analysis = analyze(cam_classifier, mel_image)
    features = analysis.prediction.features
    assert features.shape[1:] == (6, 8)
    assert analysis.cams.shape == (7, 6, 8)
    assert analysis.cams.dtype == np.float32
    assert analysis.cams.min() >= 0.0 and analysis.cams.max() <= 1.0
    non_empty = [cam for cam in analysis.cams if cam.max() > 0]
    assert len(non_empty) >= 2
    for cam in non_empty:
        assert cam.min() == pytest.approx(0.0, abs=1e-6) and cam.max() == pytest.approx(1.0, abs=1e-5)
    # A different explanation per class, not one map repeated (an empty map: no positive evidence).
    assert len({cam.round(4).tobytes() for cam in non_empty}) == len(non_empty)


def test_linear_head_maps_agree_with_pytorch_grad_cam(cam_classifier, mel_image):
    assert cam_classifier.linear_head is not None  # the free path is the one under test
    analysis = analyze(cam_classifier, mel_image)
    assert_agrees_with_reference(analysis.cams, reference_cams(cam_classifier, mel_image), (192, 256))


def test_fast_linear_head_path_equals_the_gradient_path(cam_classifier, mel_image):
    prediction = cam_classifier.predict(mel_image)
    fast = cams_from_linear_head(prediction.features, cam_classifier.linear_head[0])
    slow = cams_from_gradients(cam_classifier.model, prediction.features)
    np.testing.assert_allclose(fast, slow, atol=1e-4)  # float32 rounding, amplified by the min-max scaling


def test_other_heads_take_the_gradient_path_and_agree_with_pytorch_grad_cam(max_pool_classifier, mel_image):
    assert max_pool_classifier.linear_head is None
    analysis = analyze(max_pool_classifier, mel_image)
    assert analysis.cams.shape == (7, 6, 8)
    assert_agrees_with_reference(analysis.cams, reference_cams(max_pool_classifier, mel_image), (192, 256))


def test_maps_come_from_the_prediction_forward_pass(cam_classifier, mel_image):
    """The maps belong to the probabilities shown: same features, same label order."""
    analysis = analyze(cam_classifier, mel_image)
    weight, bias = cam_classifier.linear_head
    pooled = analysis.prediction.features.mean(axis=(1, 2))
    np.testing.assert_allclose(weight @ pooled + bias, analysis.prediction.logits, atol=1e-4)


# ---- overlays -------------------------------------------------------------------------------------

@pytest.mark.parametrize("portrait", [False, True], ids=["600x450", "450x600"])
def test_overlay_has_the_uploads_size_for_every_class(tiny_classifier, mel_image, portrait):
    image = np.rot90(mel_image).copy() if portrait else mel_image
    analysis = analyze(tiny_classifier, image)
    height, width = image.shape[:2]
    assert (width, height) == ((450, 600) if portrait else (600, 450))
    for label in analysis.labels:
        overlay = analysis.overlay(label)
        assert overlay.shape == (height, width, 3) and overlay.dtype == np.uint8
    left, top, right, bottom = analysis.prediction.crop_box
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    overlay = analysis.overlay()
    # Heat is blended where the model looked; outside that region the photo is untouched.
    assert np.abs(overlay[top + 5:bottom - 5, left + 5:right - 5].astype(int)
                  - image[top + 5:bottom - 5, left + 5:right - 5]).mean() > 5
    if portrait:  # the model saw a centred band: above and below it nothing is drawn but the scale
        np.testing.assert_array_equal(overlay[bottom + 3:], image[bottom + 3:])
    else:
        np.testing.assert_array_equal(overlay[:, :left - 3], image[:, :left - 3])


def test_exif_rotated_upload_gets_an_upright_overlay(tiny_classifier, mel_image):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(mel_image).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    analysis = analyze(tiny_classifier, buffer.getvalue())
    assert analysis.image.shape == (600, 450, 3)
    assert analysis.overlay().shape == (600, 450, 3)


def test_heat_is_drawn_where_the_map_is_hot(mel_image):
    """A map hot only in its top-left quarter colours the top-left of the model's region red."""
    height, width = mel_image.shape[:2]
    cam = np.zeros((6, 8), np.float32)
    cam[:3, :4] = 1.0
    box = (0, 0, width, height)
    overlay = overlay_heatmap(mel_image, cam, box, opacity=0.6, scale_bar=False).astype(int)
    redness = overlay[..., 0] - overlay[..., 2]
    top_left = redness[: height // 2 - 40, : width // 2 - 40].mean()
    bottom_right = redness[height // 2 + 40:, width // 2 + 40:].mean()
    assert top_left > bottom_right + 50
    np.testing.assert_array_equal(overlay_heatmap(mel_image, cam, box, opacity=0.0, scale_bar=False), mel_image)


def test_overlay_has_a_visible_colour_scale(mel_image):
    cam = np.zeros((6, 8), np.float32)
    overlay = overlay_heatmap(mel_image, cam, (0, 0, 600, 450), opacity=0.0, scale_bar=True)
    changed = np.any(overlay != mel_image, axis=2)
    rows, cols = np.nonzero(changed)
    assert cols.min() > 600 * 0.7 and rows.max() < 450 * 0.6  # a bar in the top-right corner
    bar = overlay[rows.min():rows.max() + 1, cols.max() - 6]
    top, bottom = bar[len(bar) // 6].astype(int), bar[-len(bar) // 6].astype(int)
    assert top[0] > top[2] and bottom[2] > bottom[0]  # high (red) at the top, low (blue) at the bottom
