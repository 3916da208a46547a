"""Model loading and prediction through the real loader: local folders, Hub repo ids (offline), clear
errors, the checkpoint's own label order and temperature, preprocessing, EXIF and image modes."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY_LABELS, TINY_TEMPERATURE, read_config, write_tiny_checkpoint
from model import (Classifier, ImageError, ModelLoadError, get_classifier, image_input, lesion_class,
                   load_rgb, resolve, softmax)
from model.preprocess import preprocess


def reference_logits(checkpoint_dir, batch: np.ndarray) -> np.ndarray:
    """Logits from a timm model built by hand from the same files, bypassing the app's loader."""
    config = read_config(checkpoint_dir)
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"])
    model.load_state_dict(load_file(checkpoint_dir / "model.safetensors"))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(batch)).numpy()[0]


# ---- loading ---------------------------------------------------------------------------------------

def test_local_directory_loads_with_its_config(tiny_checkpoint, tiny_classifier):
    checkpoint = resolve(tiny_checkpoint)
    assert checkpoint.directory == tiny_checkpoint.resolve()
    assert checkpoint.revision == "local"
    assert checkpoint.label_names == TINY_LABELS
    assert tiny_classifier.labels == tuple(TINY_LABELS)
    assert tiny_classifier.data_config.input_size == (3, 64, 80)  # from the checkpoint's pretrained_cfg
    assert tiny_classifier.info["architecture"] == "test_resnet"
    assert len(tiny_classifier.info["sha256"]) == 64


def test_hub_repo_id_loads_offline_from_the_cache(hf_offline_cache, tiny_classifier, mel_600x450):
    checkpoint = resolve(hf_offline_cache["repo_id"])
    assert checkpoint.model_id == "test-org/tiny-skin"
    assert checkpoint.revision == hf_offline_cache["commit"]  # the exact snapshot that was loaded
    assert checkpoint.label_names == TINY_LABELS
    from_hub = Classifier(checkpoint, device="cpu").predict(mel_600x450).probabilities
    np.testing.assert_allclose(from_hub, tiny_classifier.predict(mel_600x450).probabilities, atol=1e-6)
    # A revision pin goes through the same path.
    assert resolve("test-org/tiny-skin@main").revision == hf_offline_cache["commit"]


def test_uncached_hub_repo_offline_gives_one_clear_message(hf_offline_cache):
    with pytest.raises(ModelLoadError) as error:
        resolve("test-org/not-in-cache")
    message = str(error.value)
    assert "test-org/not-in-cache" in message
    assert "local directory" in message and "Hugging Face Hub repo" in message  # what was tried
    assert "Fix:" in message and "config.json" in message and "HF_HUB_OFFLINE" in message  # how to fix it
    assert "Traceback" not in message and "\n" not in message


def test_spec_that_is_neither_folder_nor_repo_id():
    spec = "no-such-folder/with/three-parts"
    with pytest.raises(ModelLoadError) as error:
        get_classifier(spec)
    message = str(error.value)
    assert spec in message and "does not exist" in message
    assert "not one: expected 'org/name'" in message
    assert "--model" in message and "SKIN_MODEL" in message


def test_missing_absolute_folder_is_reported_as_a_folder_only(tmp_path):
    spec = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(ModelLoadError) as error:
        get_classifier(spec)
    message = str(error.value)
    assert spec in message and "does not exist" in message and "--model" in message
    assert "not one: expected" not in message  # a path was meant; no noise about Hub id syntax


def test_folder_without_safetensors_weights_is_refused_with_a_hint(tiny_checkpoint, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelLoadError, match="missing model.safetensors.*only safetensors weights are loaded"):
        resolve(folder)


def test_config_without_label_names_is_refused(tiny_checkpoint, tmp_path):
    folder = tmp_path / "nolabels"
    shutil.copytree(tiny_checkpoint, folder)
    config = read_config(folder)
    del config["label_names"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="lacks label_names"):
        resolve(folder)


# ---- prediction ------------------------------------------------------------------------------------

def test_probabilities_sum_to_one_in_the_checkpoints_label_order(tiny_checkpoint, tiny_classifier, mel_600x450):
    prediction = tiny_classifier.predict(mel_600x450)
    assert prediction.labels == tuple(TINY_LABELS)
    assert prediction.probabilities.shape == (7,)
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    batch, _ = preprocess(np.asarray(Image.open(mel_600x450).convert("RGB")), tiny_classifier.data_config)
    expected = softmax(reference_logits(tiny_checkpoint, batch), TINY_TEMPERATURE)
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)
    assert prediction.top_label == TINY_LABELS[int(np.argmax(expected))]


def test_top_class_is_read_from_the_checkpoint_not_the_class_table(tmp_path, mel_600x450):
    """Output 3 is 'bcc' in this checkpoint (it would be 'vasc' in the class table's order)."""
    directory = write_tiny_checkpoint(tmp_path / "biased")
    weights = load_file(directory / "model.safetensors")
    weights["fc.bias"][TINY_LABELS.index("bcc")] = 100.0
    from safetensors.torch import save_file
    save_file(weights, directory / "model.safetensors")
    prediction = Classifier(resolve(directory), device="cpu").predict(mel_600x450)
    assert prediction.top_label == "bcc"
    assert lesion_class(prediction.top_label).name == "Basal cell carcinoma"


def test_temperature_from_the_config_is_applied(tiny_checkpoint, tiny_classifier, tmp_path, mel_600x450):
    prediction = tiny_classifier.predict(mel_600x450)
    assert tiny_classifier.temperature == TINY_TEMPERATURE
    np.testing.assert_allclose(prediction.probabilities, softmax(prediction.logits / TINY_TEMPERATURE), atol=1e-6)

    plain = tmp_path / "no-temperature"
    shutil.copytree(tiny_checkpoint, plain)
    config = read_config(plain)
    del config["temperature"]
    (plain / "config.json").write_text(json.dumps(config))
    uncalibrated = Classifier(resolve(plain), device="cpu").predict(mel_600x450)
    np.testing.assert_allclose(uncalibrated.logits, prediction.logits, atol=1e-5)
    # T > 1 softens: the calibrated top probability is lower than the raw one.
    assert prediction.probabilities.max() < uncalibrated.probabilities.max() - 1e-3


def test_batch_probabilities_match_single_predictions(tiny_classifier, example_paths):
    paths = list(example_paths.values())
    batch = tiny_classifier.predict_probabilities(paths, batch_size=3)
    single = np.stack([tiny_classifier.predict(p).probabilities for p in paths])
    np.testing.assert_allclose(batch, single, atol=1e-5)


@pytest.mark.parametrize("input_size,crop_pct,interpolation", [
    ((3, 64, 80), 1.0, "bicubic"),     # the tiny checkpoint's own config: a 5:4 crop of a 4:3 photo
    ((3, 120, 160), 1.0, "bicubic"),   # the bundled model's
    ((3, 224, 224), 0.875, "bilinear"),  # ImageNet-style: shorter edge to 256, centre 224 crop
    ((3, 120, 160), 1.15, "bicubic"),  # crop_pct > 1: black borders
])
@pytest.mark.parametrize("portrait", [False, True])
def test_preprocessing_is_timms_eval_transform(tiny_classifier, mel_600x450, input_size, crop_pct,
                                               interpolation, portrait):
    """Same resize, filter, centre crop, padding and normalisation as timm's own (Pillow) transform:
    the model sees the picture timm would show it, to within one grey level."""
    image = Image.open(mel_600x450).convert("RGB")
    if portrait:
        image = image.transpose(Image.Transpose.ROTATE_90)
    config = dataclasses.replace(tiny_classifier.data_config, input_size=input_size, crop_pct=crop_pct,
                                 interpolation=interpolation)
    ours, box = preprocess(np.asarray(image), config)
    theirs = timm.data.create_transform(input_size=input_size, interpolation=interpolation, mean=config.mean,
                                        std=config.std, crop_pct=crop_pct)(image).numpy()[None]
    assert ours.shape == theirs.shape == (1, *input_size)
    one_level = 1.0 / (255.0 * min(config.std))
    assert np.abs(ours - theirs).max() <= one_level + 1e-5
    assert np.abs(ours - theirs).mean() < 0.01 * one_level
    left, top, right, bottom = box
    assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
    # The box is the region shown: its aspect ratio is the model input's (unless the crop padded).
    if crop_pct <= 1.0:
        assert (right - left) / (bottom - top) == pytest.approx(input_size[2] / input_size[1], rel=0.01)


# ---- image input: EXIF orientation and modes -------------------------------------------------------

def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_rotated_photo_is_seen_upright(tiny_classifier, mel_600x450):
    stored = np.asarray(Image.open(mel_600x450).convert("RGB"))  # 450 high, 600 wide as stored
    data = jpeg_with_orientation(stored, 6)  # camera says: rotate 90° clockwise to display
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    prediction = tiny_classifier.predict(data)
    assert prediction.image.shape == (600, 450, 3)
    np.testing.assert_array_equal(prediction.image, np.rot90(decoded, k=-1))
    # The model sees the upright photo: the same result as an upright file without EXIF.
    upright = tiny_classifier.predict(np.rot90(decoded, k=-1).copy())
    np.testing.assert_allclose(prediction.probabilities, upright.probabilities, atol=1e-6)


def jpeg_variants(rgb: Image.Image) -> dict[str, bytes]:
    """The JPEG flavours cameras and browsers produce: chroma subsampling, progressive, optimised."""
    out = {}
    for name, options in {"4:2:0 q75": dict(quality=75, subsampling=2), "4:2:2 q90": dict(quality=90, subsampling=1),
                          "4:4:4 q95": dict(quality=95, subsampling=0),
                          "progressive": dict(quality=85, progressive=True),
                          "optimized": dict(quality=80, optimize=True)}.items():
        buffer = io.BytesIO()
        rgb.save(buffer, "JPEG", **options)
        out[name] = buffer.getvalue()
    return out


def test_fast_jpeg_decoding_gives_pillows_pixels(mel_600x450, example_paths):
    """Plain JPEGs skip Pillow's decoder (the predictor's fast path): the pixels must be Pillow's."""
    rgb = Image.open(mel_600x450).convert("RGB")
    files = {**jpeg_variants(rgb), **{path.name: path.read_bytes() for path in example_paths.values()}}
    for name, data in files.items():
        fast = image_input._decode_complete_jpeg(Image.open(io.BytesIO(data)), data)
        assert fast is not None, f"{name}: the fast path was not taken"
        np.testing.assert_array_equal(fast, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), err_msg=name)
        np.testing.assert_array_equal(load_rgb(data), fast, err_msg=name)


def test_jpegs_the_fast_path_cannot_read_alike_go_through_pillow(mel_600x450):
    rgb = Image.open(mel_600x450).convert("RGB")
    stored = np.asarray(rgb)
    rotated, cmyk, gray = jpeg_with_orientation(stored, 6), saved(rgb.convert("CMYK"), "JPEG"), saved(rgb.convert("L"), "JPEG")
    for data in (rotated, cmyk, gray):
        assert image_input._decode_complete_jpeg(Image.open(io.BytesIO(data)), data) is None
    assert load_rgb(rotated).shape == (600, 450, 3)  # upright, as Pillow's path turns it
    assert load_rgb(gray).shape == (450, 600, 3)
    # OpenCV would decode a truncated file into a half-grey picture; it must be refused instead.
    truncated = saved(rgb, "JPEG")[:-4000]
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_rgb(truncated)


def saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def mode_samples(rgb: Image.Image) -> dict[str, bytes]:
    gray = rgb.convert("L")
    sixteen = Image.fromarray((np.asarray(gray, np.uint16) * 257).astype(np.uint16))  # full 16-bit range
    rgba = rgb.convert("RGBA")
    rgba.putalpha(200)
    return {"L": saved(gray, "PNG"), "RGBA": saved(rgba, "PNG"), "P": saved(rgb.convert("P"), "GIF"),
            "CMYK": saved(rgb.convert("CMYK"), "JPEG"), "I;16": saved(sixteen, "PNG")}


def test_every_image_mode_becomes_rgb(tiny_classifier, mel_600x450):
    rgb = Image.open(mel_600x450).convert("RGB")
    for mode, data in mode_samples(rgb).items():
        assert Image.open(io.BytesIO(data)).mode == mode, mode  # the file really is in that mode
        prediction = tiny_classifier.predict(data)
        assert prediction.image.shape == (450, 600, 3) and prediction.image.dtype == np.uint8, mode
        assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-6), mode
        # The picture survives the conversion (16-bit is rescaled, not clipped to white).
        reference = np.asarray(rgb.convert("L"), np.float32)
        seen = np.asarray(Image.fromarray(prediction.image).convert("L"), np.float32)
        assert np.corrcoef(seen.ravel(), reference.ravel())[0, 1] > 0.9, mode
