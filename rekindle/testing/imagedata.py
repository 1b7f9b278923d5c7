"""Photos, good and bad, made in code for the upload tests (nothing big is committed).

Each function returns the bytes of one file. Pillow writes the ordinary ones; the
odd ones (a PNG that only declares a huge size, a 16-bit RGB PNG, an ICC profile
with swapped primaries) are assembled by hand so the tests control every byte.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageCms

# Files found by fuzzing that no code here makes: kept as they are.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "images"

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def solid(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 150, 100)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


def noisy(width: int = 256, height: int = 256, seed: int = 1) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))  # noqa: S311


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 150, 100)) -> bytes:
    return encode(solid(width, height, color), "JPEG", quality=92)


def truncated_jpeg() -> bytes:
    data = encode(noisy(), "JPEG", quality=95)
    return data[: len(data) // 2]


def exif_rotated_jpeg_with_gps() -> bytes:
    """A 60x20 landscape image stored sideways: EXIF orientation 6 says "rotate 90° clockwise to view".

    The left third is red, so once upright (20x60) the top third is red. It carries GPS
    coordinates, XMP, a comment and an sRGB ICC profile: all must be gone when stored.
    """
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "Old Camera Co."  # Make
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return encode(
        image,
        "JPEG",
        quality=95,
        exif=exif,
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>',
        comment=b"taken at grandma's house",
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )


def upright_jpeg_with_gps() -> bytes:
    """An upright 8-bit RGB JPEG with no ICC profile: nothing converts it, yet its GPS, XMP and comment must go."""
    exif = Image.Exif()
    exif[0x010F] = "Old Camera Co."  # Make
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return encode(
        solid(40, 30),
        "JPEG",
        quality=95,
        exif=exif,
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>',
        comment=b"taken at grandma's house",
    )


def cmyk_jpeg() -> bytes:
    # Pure cyan ink: no magenta, yellow or black.
    return encode(Image.new("CMYK", (32, 24), (255, 0, 0, 0)), "JPEG", quality=95)


def gray16_png(value: int = 40000) -> bytes:
    return encode(Image.new("I;16", (16, 12), value), "PNG")


def gray16_tiff(mode: str = "I;16B", value: int = 0x8000, size: tuple[int, int] = (16, 12)) -> bytes:
    """A 16-bit grayscale TIFF; ``I;16B`` is big-endian ("MM"), as scanners on some systems write."""
    order = ">" if mode == "I;16B" else "<"
    samples = struct.pack(f"{order}H", value) * (size[0] * size[1])
    return encode(Image.frombytes(mode, size, samples), "TIFF")


def float_tiff(value: float = 0.5, size: tuple[int, int] = (16, 12)) -> bytes:
    """A 32-bit floating point TIFF with samples in [0, 1], as scientific scanners write."""
    return encode(Image.new("F", size, value), "TIFF")


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def rgb16_png(width: int = 8, height: int = 6, rgb: tuple[int, int, int] = (0xC0FF, 0x80FF, 0x40FF)) -> bytes:
    """A 48-bit RGB PNG (16 bits per channel)."""
    row = b"\x00" + struct.pack(">HHH", *rgb) * width
    return _png(width, height, 16, 2, row * height)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but which holds almost no data."""
    return _png(width, height, 8, 2, b"\x00" * 64)


def animated_gif() -> bytes:
    frames = [Image.new("P", (16, 16), index) for index in (1, 2, 3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_webp() -> bytes:
    frames = [solid(16, 16, (index * 60, 0, 0)) for index in (1, 2, 3)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)


def animated_png() -> bytes:
    frames = [solid(16, 16, (0, index * 60, 0)) for index in (1, 2, 3)]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def palette_png_with_transparency() -> bytes:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(0, (0, 0, 4, 8))  # the left half uses index 0, which is transparent
    return encode(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (4, 0, 8, 8))
    return encode(image, "PNG")


def grayscale_jpeg() -> bytes:
    return encode(Image.new("L", (16, 16), 90), "JPEG", quality=95)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\x00" * 4 + _s15(x) + _s15(y) + _s15(z)


def swapped_primaries_icc() -> bytes:
    """An ICC v2 RGB profile whose red and green colorants are sRGB's green and red.

    A pixel (255, 0, 0) tagged with it is green; converting to sRGB must say so.
    """
    description = b"Swapped primaries"
    desc = (
        b"desc"
        + b"\x00" * 4
        + struct.pack(">I", len(description) + 1)
        + description
        + b"\x00"
        + b"\x00" * 8  # no Unicode description
        + b"\x00" * 3  # no ScriptCode description
        + b"\x00" * 67
    )
    gamma = b"curv" + b"\x00" * 4 + struct.pack(">IH", 1, 0x0233) + b"\x00\x00"
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz_tag(0.3851, 0.7169, 0.0971)),  # sRGB's green
        (b"gXYZ", _xyz_tag(0.4361, 0.2225, 0.0139)),  # sRGB's red
        (b"bXYZ", _xyz_tag(0.1431, 0.0606, 0.7141)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
        (b"cprt", b"text" + b"\x00" * 4 + b"No copyright, test data\x00"),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    table = struct.pack(">I", len(tags))
    body = b""
    for signature, data in tags:
        padded = data + b"\x00" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = 128 + table_size + len(body)
    header = (
        struct.pack(">I", size)
        + b"\x00" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2025, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\x00" * 24
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\x00" * 48
    )
    assert len(header) == 128
    return header + table + body


def jpeg_with_icc(profile: bytes, color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    return encode(solid(16, 16, color), "JPEG", quality=95, icc_profile=profile)


def text_named_jpeg() -> bytes:
    return b"This is not a photo, just a note saved as photo.jpg.\n" * 4


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
