"""Upload checks and normalization: formats by content, pixel limits, orientation, colour, metadata."""

from __future__ import annotations

import hashlib
import io
import struct

import pytest
from PIL import Image
from pytest_django.fixtures import Settings

from rekindle.api_errors import status_of
from rekindle.errors import ServiceError
from rekindle.images import (
    FileTooLarge,
    ImageTooLarge,
    InvalidImage,
    NormalizedImage,
    UnsupportedImage,
    UploadSizeLimitHandler,
    normalize_image,
)
from rekindle.testing import imagedata


@pytest.fixture(autouse=True)
def _tiny_photos_allowed(settings: Settings) -> None:
    # The photos here are a few pixels wide so the suite stays fast; the shortest-side limit has its own tests.
    settings.UPLOAD_MIN_SIDE = 1


def _normalize(data: bytes) -> tuple[NormalizedImage, bytes, Image.Image]:
    result = normalize_image(io.BytesIO(data))
    stored = result.file.read()
    result.close()
    image = Image.open(io.BytesIO(stored))
    image.load()
    return result, stored, image


def rgb(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


def jpeg_segments(data: bytes) -> list[int]:
    """The marker of every segment before the image data (0xE1 = EXIF/XMP, 0xE2 = ICC, 0xFE = comment)."""
    assert data[:2] == b"\xff\xd8"
    markers, position = [], 2
    while position < len(data):
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: metadata cannot follow
            break
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        markers.append(marker)
        position += 2 + length
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append(data[position + 4 : position + 8])
        position += 12 + length
    return chunks


def test_it_applies_exif_orientation_and_strips_every_piece_of_metadata() -> None:
    source = imagedata.exif_rotated_jpeg_with_gps()
    assert b"Old Camera Co." in source

    result, stored, image = _normalize(source)

    assert (image.width, image.height) == (20, 60)  # upright: was 60x20 stored sideways
    red_top, blue_bottom = rgb(image, (10, 5)), rgb(image, (10, 55))
    assert red_top[0] > 200
    assert red_top[2] < 50
    assert blue_bottom[2] > 200
    assert blue_bottom[0] < 50
    assert not image.getexif()
    assert not {"exif", "xmp", "icc_profile", "comment"} & set(image.info)
    assert not {0xE1, 0xE2, 0xED, 0xFE} & set(jpeg_segments(stored))
    for leak in (b"Old Camera Co.", b"xmpmeta", b"grandma"):
        assert leak not in stored
    assert (result.format, result.ext, result.source_format) == ("jpeg", "jpg", "JPEG")
    assert (result.width, result.height, result.size) == (20, 60, len(stored))
    assert result.sha256 == hashlib.sha256(stored).hexdigest()


def test_it_strips_metadata_from_a_photo_that_needs_no_conversion() -> None:
    source = imagedata.upright_jpeg_with_gps()
    assert b"grandma" in source

    _, stored, image = _normalize(source)

    assert (image.width, image.height) == (40, 30)
    assert not image.getexif()
    assert not {0xE1, 0xE2, 0xED, 0xFE} & set(jpeg_segments(stored))
    for leak in (b"Old Camera Co.", b"xmpmeta", b"grandma"):
        assert leak not in stored


def test_it_converts_through_an_embedded_icc_profile_to_srgb() -> None:
    # Red pixels in a profile whose "red" is sRGB's green: a colour-managed result is green.
    _, stored, image = _normalize(imagedata.jpeg_with_icc(imagedata.swapped_primaries_icc()))
    red, green, blue = rgb(image, (8, 8))
    assert green > 200
    assert red < 60
    assert blue < 60
    assert 0xE2 not in jpeg_segments(stored)


def test_it_converts_cmyk_to_rgb() -> None:
    _, _, image = _normalize(imagedata.cmyk_jpeg())
    assert image.mode == "RGB"
    red, green, blue = rgb(image, (4, 4))  # cyan
    assert red < 40
    assert green > 200
    assert blue > 200


def test_it_scales_16_bit_grayscale_to_8_bit_instead_of_clipping() -> None:
    result, stored, image = _normalize(imagedata.gray16_png(40000))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (155, 155, 155)  # 40000 / 257, not clipped to 255
    assert result.format == "png"
    assert png_chunks(stored) == [b"IHDR", b"IDAT", b"IEND"]


def test_it_reduces_16_bit_rgb_to_8_bit() -> None:
    _, stored, image = _normalize(imagedata.rgb16_png())
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0xC0, 0x80, 0x40)
    assert stored[24] == 8  # IHDR bit depth


@pytest.mark.parametrize(
    ("data", "transparent_pixel", "opaque_pixel", "opaque_color"),
    [
        (imagedata.palette_png_with_transparency(), (0, 0), (6, 6), (10, 200, 30)),
        (imagedata.rgba_png(), (0, 0), (6, 6), (0, 0, 255)),
    ],
    ids=["palette", "alpha"],
)
def test_it_flattens_transparency_over_white(
    data: bytes, transparent_pixel: tuple[int, int], opaque_pixel: tuple[int, int], opaque_color: tuple[int, int, int]
) -> None:
    _, _, image = _normalize(data)
    assert image.mode == "RGB"
    assert image.getpixel(transparent_pixel) == (255, 255, 255)
    assert image.getpixel(opaque_pixel) == opaque_color


def test_it_turns_grayscale_into_rgb() -> None:
    _, _, image = _normalize(imagedata.grayscale_jpeg())
    assert image.mode == "RGB"
    red, green, blue = rgb(image, (3, 3))
    assert abs(red - 90) <= 2
    assert red == green == blue


@pytest.mark.parametrize(
    ("fmt", "stored_format"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "jpeg"), ("TIFF", "png"), ("BMP", "png")],
)
def test_it_accepts_each_supported_format_by_its_content(fmt: str, stored_format: str) -> None:
    result, _, image = _normalize(imagedata.encode(imagedata.solid(30, 20), fmt))
    assert result.source_format == fmt
    assert result.format == stored_format
    assert image.format == stored_format.upper()
    assert image.size == (30, 20)


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"", UnsupportedImage, "unsupported_media_type"),
        (imagedata.text_named_jpeg(), UnsupportedImage, "unsupported_media_type"),
        (imagedata.pdf(), UnsupportedImage, "unsupported_media_type"),
        (imagedata.animated_gif(), UnsupportedImage, "unsupported_media_type"),
        (imagedata.animated_webp(), UnsupportedImage, "unsupported_media_type"),
        (imagedata.animated_png(), UnsupportedImage, "unsupported_media_type"),
        (imagedata.encode(imagedata.solid(), "GIF"), UnsupportedImage, "unsupported_media_type"),
        (imagedata.truncated_jpeg(), InvalidImage, "invalid_image"),
        (imagedata.png_declaring(20000, 20000), ImageTooLarge, "image_too_large"),
        (imagedata.png_declaring(8000, 8000), ImageTooLarge, "image_too_large"),
    ],
    ids=["empty", "text", "pdf", "gif", "webp-anim", "apng", "still-gif", "truncated", "bomb", "over-limit"],
)
def test_it_refuses_bad_images(data: bytes, error: type[ServiceError], code: str) -> None:
    with pytest.raises(error) as raised:
        normalize_image(io.BytesIO(data))
    assert raised.value.code == code


def test_it_takes_the_pixel_limit_from_settings(settings: Settings) -> None:
    settings.UPLOAD_MAX_PIXELS = 30 * 20 - 1
    with pytest.raises(ImageTooLarge) as raised:
        normalize_image(io.BytesIO(imagedata.jpeg(30, 20)))
    assert raised.value.details == {"max_pixels": 599, "width": 30, "height": 20}
    settings.UPLOAD_MAX_PIXELS = 30 * 20
    assert normalize_image(io.BytesIO(imagedata.jpeg(30, 20))).width == 30


def test_it_refuses_a_file_over_the_byte_limit(settings: Settings) -> None:
    data = imagedata.jpeg()
    settings.UPLOAD_MAX_BYTES = len(data) - 1
    with pytest.raises(FileTooLarge):
        normalize_image(io.BytesIO(data))


def test_it_counts_streamed_bytes_and_refuses_past_the_limit() -> None:
    handler = UploadSizeLimitHandler(None, max_bytes=10)
    assert handler.receive_data_chunk(b"12345", 0) == b"12345"  # passed on unchanged
    assert handler.receive_data_chunk(b"67890", 5) == b"67890"
    with pytest.raises(FileTooLarge) as raised:
        handler.receive_data_chunk(b"!", 10)
    assert status_of(raised.value) == 413
    assert raised.value.code == "file_too_large"


def test_it_refuses_from_content_length_before_reading_the_body() -> None:
    handler = UploadSizeLimitHandler(None, max_bytes=1000)

    class Unreadable(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("the body was read")

    handler.handle_raw_input(Unreadable(), {}, 1000 + 1024, "boundary")  # room for the form fields
    with pytest.raises(FileTooLarge):
        handler.handle_raw_input(Unreadable(), {}, 1000 + 64 * 1024 + 1, "boundary")


@pytest.mark.parametrize(
    ("size", "code"),
    [
        ((1, 1), "image_too_small"),
        ((70000, 1), "image_too_small"),
        ((31, 400), "image_too_small"),
        ((900, 100), "image_aspect_unsupported"),
    ],
)
def test_it_refuses_photos_too_small_or_too_thin_to_restore(
    settings: Settings, size: tuple[int, int], code: str
) -> None:
    settings.UPLOAD_MIN_SIDE = 32
    settings.UPLOAD_MAX_ASPECT = 8.0
    with pytest.raises(ServiceError) as raised:
        normalize_image(io.BytesIO(imagedata.encode(Image.new("L", size, 90), "PNG")))
    assert raised.value.code == code
    assert status_of(raised.value) == 400
    limit = "min_side" if code == "image_too_small" else "max_aspect"
    assert raised.value.details[limit] == (32 if limit == "min_side" else 8.0)
    assert raised.value.details["width"] == size[0]
    settings.UPLOAD_MAX_ASPECT = 9.0
    assert normalize_image(io.BytesIO(imagedata.encode(Image.new("L", (900, 100), 90), "PNG"))).width == 900


def test_it_keeps_a_photo_whose_exif_block_is_malformed() -> None:
    # A rotated phone photo whose EXIF block Pillow can read but cannot write back (found by fuzzing).
    data = (imagedata.FIXTURES / "malformed_exif_rotated.jpg").read_bytes()
    result = normalize_image(io.BytesIO(data))
    with Image.open(result.file) as stored:
        assert stored.format == "JPEG"
        assert not stored.getexif()


def test_it_reads_16_bit_tiff_in_either_byte_order() -> None:
    for mode in ("I;16B", "I;16"):
        result = normalize_image(io.BytesIO(imagedata.gray16_tiff(mode, value=0x8000)))
        with Image.open(result.file) as stored:
            assert stored.mode == "RGB"
            assert stored.getpixel((0, 0)) == (127, 127, 127), mode


def test_it_scales_a_float_tiff_of_zero_to_one_to_the_whole_range() -> None:
    result = normalize_image(io.BytesIO(imagedata.float_tiff(0.5)))
    with Image.open(result.file) as stored:
        assert stored.getpixel((0, 0)) == (127, 127, 127)


def test_it_refuses_an_image_that_needs_more_memory_to_decode_than_allowed(settings: Settings) -> None:
    settings.UPLOAD_DECODE_MEMORY_MB = 64
    # 6000x6000 RGB of one color: a small file, 108 MB of pixels once decoded.
    with pytest.raises(ServiceError) as raised:
        normalize_image(io.BytesIO(imagedata.encode(imagedata.solid(6000, 6000), "PNG")))
    assert raised.value.code == "image_too_complex"
    assert status_of(raised.value) == 400
