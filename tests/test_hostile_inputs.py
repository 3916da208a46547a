"""What the internet sends: every hostile or odd upload gets a 4xx {"error": ...} a person understands,
the server keeps serving, and every legitimate image format is decoded correctly."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, features

from model import ImageError, load_image
from serving.rest import Limits, create_rest_app

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def halves(left, right, size=(96, 64)) -> Image.Image:
    """An RGB image whose left half is `left` and right half `right` (so rotations are visible)."""
    width, height = size
    array = np.empty((height, width, 3), np.uint8)
    array[:, : width // 2], array[:, width // 2:] = left, right
    return Image.fromarray(array)


def png_declaring(width: int, height: int) -> bytes:
    """A few-KB PNG whose header declares width×height 8-bit RGB pixels: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(bytes((width * 3 + 1) * 8), 9)  # the first rows only: enough to look real
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def client(rest_client):
    return rest_client


@pytest.fixture(scope="module")
def jpeg_bytes(mel_bytes) -> bytes:
    return mel_bytes


def assert_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert words.lower() in body["error"].lower()
    assert "Traceback" not in body["error"] and ".py" not in body["error"]


# --- REST: refused with a 4xx and a message ------------------------------------------------------

def _json(body) -> dict:
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


HOSTILE_BODIES = {
    "invalid base64": (_json({"image_data": "this is not base64!"}), 422, "not valid base64"),
    "blank image_data": (_json({"image_data": " \n "}), 422, "image_data is empty"),
    "empty string image_data": (_json({"image_data": ""}), 422, "image_data"),
    "empty body": ({"content": b"", "headers": {"content-type": "application/json"}}, 422, "body is empty"),
    "empty object": (_json({}), 422, "image_data"),
    "malformed JSON": ({"content": b'{"image_data": "abc', "headers": {"content-type": "application/json"}},
                       400, "not valid JSON"),
    "image_data a number": (_json({"image_data": 12345}), 422, "image_data"),
    "image_data a list": (_json({"image_data": ["aGVsbG8="]}), 422, "image_data"),
    "body a list": (_json([{"image_data": "aGVsbG8="}]), 422, "must be a JSON object"),
    "body null": (_json(None), 422, "JSON object"),
    "body a string": (_json("aGVsbG8="), 422, "must be a JSON object"),
    "target_class a number": (_json({"image_data": "aGVsbG8=", "target_class": 3}), 422, "target_class"),
    "unknown field": (_json({"image_data": "aGVsbG8=", "patient": "x"}), 422, "patient: unknown field"),
    "non-image bytes": (_json({"image_data": b64(b"%PDF-1.4\n" + bytes(range(256)) * 8)}), 422,
                        "not an image we can read"),
    "text as image": (_json({"image_data": b64("Hello, I am a text file.\n".encode() * 50)}), 422,
                      "not an image we can read"),
    "EPS file": (_json({"image_data": b64(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n")}), 422,
                 "not an image we can read"),
    "ICO file": (_json({"image_data": b64(encode(halves(RED, BLUE, (64, 64)), "ICO"))}), 422,
                 "not an image we can read"),
    "decompression bomb 30000x30000": (_json({"image_data": b64(png_declaring(30_000, 30_000))}), 422,
                                       "too large"),
    "1x1 image": (_json({"image_data": b64(encode(Image.new("RGB", (1, 1), RED), "PNG"))}), 422,
                  "too small"),
    "4000x10 image": (_json({"image_data": b64(encode(Image.new("RGB", (4000, 10), RED), "PNG"))}), 422,
                      "too small"),
    "4000x200 image": (_json({"image_data": b64(encode(Image.new("RGB", (4000, 200), RED), "PNG"))}), 422,
                       "aspect ratio"),
    "text/plain body": ({"content": json.dumps({"image_data": "aGVsbG8="}).encode(),
                         "headers": {"content-type": "text/plain"}}, 415, "Content-Type: application/json"),
    "multipart upload": ({"files": {"file": ("a.jpg", encode(halves(RED, BLUE), "JPEG"), "image/jpeg")}},
                         415, "application/json"),
    "raw JPEG body": ({"content": encode(halves(RED, BLUE), "JPEG"), "headers": {"content-type": "image/jpeg"}},
                      415, "application/json"),
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_hostile_request_gets_a_4xx_message_and_the_server_keeps_serving(client, name):
    request, status, words = HOSTILE_BODIES[name]
    assert_refused(client.post("/inference", **request), status, words)
    assert client.get("/health").status_code == 200


def test_truncated_jpeg_is_refused(client, jpeg_bytes):
    for cut in (len(jpeg_bytes) // 2, 200):
        response = client.post("/inference", json={"image_data": b64(jpeg_bytes[:cut])})
        assert_refused(response, 422, "truncated or corrupt")


def test_report_refuses_hostile_images_too(client, jpeg_bytes):
    assert_refused(client.post("/report", json={"image_data": b64(jpeg_bytes[:5000])}), 422, "truncated")
    assert_refused(client.post("/report", json={"image_data": b64(png_declaring(30_000, 30_000))}), 422,
                   "too large")


def test_body_over_the_default_20_mb_limit_is_refused_before_parsing(client):
    body = b'{"image_data": "' + b"A" * (28 * 1_000_000) + b'"}'
    assert_refused(client.post("/inference", content=body, headers={"content-type": "application/json"}),
                   413, "larger than")

    def chunked():  # no Content-Length: the limit must hold on the bytes actually received
        yield b'{"image_data": "'
        for _ in range(30):
            yield b"A" * 1_000_000
        yield b'"}'
    assert_refused(client.post("/inference", content=chunked(), headers={"content-type": "application/json"}),
                   413, "larger than")
    assert client.get("/health").status_code == 200


def test_upload_limit_is_configurable(tiny_classifier, jpeg_bytes):
    limits = Limits(max_upload_bytes=20_000)  # smaller than the example photo
    with TestClient(create_rest_app(tiny_classifier, limits)) as small:
        response = small.post("/inference", json={"image_data": b64(jpeg_bytes)})
        assert_refused(response, 413, "at most 0.02 MB")
        assert small.get("/health").json()["max_upload_mb"] == 0.02


def test_server_still_answers_correctly_after_hostile_input(client, jpeg_bytes):
    for request, _, _ in HOSTILE_BODIES.values():
        client.post("/inference", **request)
    response = client.post("/inference", json={"image_data": b64(jpeg_bytes)})
    assert response.status_code == 200
    assert len(response.json()["probabilities"]) == 7


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (png_declaring(30_000, 30_000), "too large"),
    (png_declaring(8_000, 8_000), "too large"),
    (encode(Image.new("RGB", (1, 1)), "PNG"), "too small"),
    (encode(Image.new("RGB", (400, 20)), "GIF"), "too small"),
    (encode(Image.new("RGB", (640, 40)), "BMP"), "aspect ratio"),
    (b"\xff\xd8\xff\xe0" + bytes(100), "not an image we can read"),  # a JPEG marker, then nothing
    (b"GIF89a" + bytes(20), "not an image we can read"),
])
def test_load_image_explains_what_is_wrong(data, words):
    with pytest.raises(ImageError, match=f"(?i){words}"):
        load_image(data)


# --- Formats that must work ----------------------------------------------------------------------

def _grayscale():
    return encode(Image.new("L", (96, 64), 100), "PNG")


def _rgba():
    rgba = np.zeros((64, 96, 4), np.uint8)  # left half fully transparent (and black underneath)
    rgba[:, 48:] = (*GREEN, 255)
    return encode(Image.fromarray(rgba), "PNG")


def _palette():
    return encode(halves(RED, BLUE).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG")


def _cmyk_jpeg():
    return encode(Image.new("CMYK", (96, 64), (0, 255, 255, 0)), "JPEG", quality=95)


def _png16():
    return encode(Image.fromarray(np.full((64, 96), 32896, np.uint16)), "PNG")


def _multiframe(fmt):
    return encode(halves(RED, BLUE), fmt, save_all=True, append_images=[halves(GREEN, GREEN)])


def _webp():
    return encode(halves(RED, BLUE), "WEBP", lossless=True)


def _exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phones write it
    return encode(halves(RED, BLUE, (80, 60)), "JPEG", quality=95, exif=exif.tobytes())


# name → (bytes, expected (width, height) after decoding, {(x, y): expected RGB})
FORMATS = {
    "grayscale PNG": (_grayscale, (96, 64), {(10, 10): (100, 100, 100)}),
    "RGBA PNG": (_rgba, (96, 64), {(10, 10): (255, 255, 255), (80, 10): GREEN}),
    "palette PNG": (_palette, (96, 64), {(10, 10): RED, (80, 10): BLUE}),
    "CMYK JPEG": (_cmyk_jpeg, (96, 64), {(48, 32): (255, 0, 0)}),
    "16-bit PNG": (_png16, (96, 64), {(10, 10): (128, 128, 128)}),
    "multi-frame GIF": (lambda: _multiframe("GIF"), (96, 64), {(10, 10): RED, (80, 10): BLUE}),
    "multi-frame TIFF": (lambda: _multiframe("TIFF"), (96, 64), {(10, 10): RED, (80, 10): BLUE}),
    "WebP": (_webp, (96, 64), {(10, 10): RED, (80, 10): BLUE}),
    # Stored 80×60 with red on the left; displayed upright it is 60×80 with red on top.
    "EXIF-rotated JPEG": (_exif_rotated, (60, 80), {(30, 10): RED, (30, 70): BLUE}),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_is_decoded_to_the_right_pixels(name):
    if name == "WebP" and not features.check("webp"):
        pytest.fail("Pillow was built without WebP support")
    make, size, pixels = FORMATS[name]
    image = load_image(make())
    assert image.mode == "RGB"
    assert image.size == size
    for (x, y), expected in pixels.items():
        # JPEG is lossy: colours within a small tolerance; lossless formats are exact to ±1.
        tolerance = 40 if "JPEG" in name else 1
        assert np.abs(np.subtract(image.getpixel((x, y)), expected)).max() <= tolerance, (x, y)


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_is_analysed_over_rest(client, name):
    make, (width, height), _ = FORMATS[name]
    response = client.post("/inference", json={"image_data": b64(make())})
    assert response.status_code == 200, response.text
    heatmap = Image.open(io.BytesIO(base64.b64decode(response.json()["heatmap"])))
    assert heatmap.size == (width, height)  # the heatmap is drawn on the image as the user sees it
