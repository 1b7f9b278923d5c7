"""Checking and normalizing uploaded photos with Pillow.

An upload is accepted by its decoded format, never its file name: JPEG, PNG, WebP,
TIFF and BMP. Only those Pillow plugins are ever asked to parse it, so a file of any
other kind (a GIF, a PDF, text named ``.jpg``, zero bytes) is refused with 415 before
any decoder runs. Animated images (APNG, animated WebP, multi-page TIFF) are refused
too: there is no single photo to restore.

The size in pixels is checked from the header, before pixels are decoded:
over ``UPLOAD_MAX_PIXELS`` or Pillow's decompression-bomb guard is 400
``image_too_large``. A file whose pixels cannot be decoded (truncated, corrupt) is 400
``invalid_image``.

The stored original is normalized: EXIF orientation applied, converted to 8-bit
sRGB RGB (an embedded ICC profile is honoured first; CMYK, 16-bit, palette and
grayscale are converted; transparency is flattened over white), and written with no
metadata at all (no EXIF, GPS, XMP, ICC, comments). Lossy sources (JPEG, WebP) are
stored as JPEG at quality 95 with no chroma subsampling; lossless ones (PNG, TIFF,
BMP) as PNG, so a scan is not degraded before restoration.

:class:`UploadSizeLimitHandler` enforces ``UPLOAD_MAX_BYTES`` while the request body is
read: from ``Content-Length`` before reading anything, and by counting bytes as they
stream to the temporary file when the header is absent or understates the body.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from rekindle.errors import InvalidRequest, TooLarge, UnsupportedMedia

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
LOSSY_FORMATS = frozenset({"JPEG", "WEBP"})
# Room in a multipart body for the boundaries, part headers and the email field.
MULTIPART_ALLOWANCE = 64 * 1024
JPEG_QUALITY = 95

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})


class UnsupportedImage(UnsupportedMedia):
    code = "unsupported_media_type"
    message = "This is not a supported image. Send a JPEG, PNG, WebP, TIFF or BMP photo."


class ImageTooLarge(InvalidRequest):
    code = "image_too_large"
    message = "The image has too many pixels."


class InvalidImage(InvalidRequest):
    code = "invalid_image"
    message = "The image is damaged or truncated and cannot be decoded."


class FileTooLarge(TooLarge):
    code = "file_too_large"
    message = "The file is too large."


def file_too_large(max_bytes: int) -> FileTooLarge:
    return FileTooLarge(
        f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.",
        details={"max_bytes": max_bytes},
    )


class UploadSizeLimitHandler(FileUploadHandler):
    """Refuses a request body over ``UPLOAD_MAX_BYTES`` with 413, as it is read.

    Put it before ``TemporaryFileUploadHandler``: it passes every chunk on unchanged,
    so the body still streams to a temporary file and is never held in memory.
    """

    def __init__(self, request: HttpRequest | None = None, max_bytes: int | None = None) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes if max_bytes is not None else settings.UPLOAD_MAX_BYTES
        self.received = 0

    def handle_raw_input(
        self,
        input_data: IO[bytes],
        META: dict[str, str],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        if content_length > self.max_bytes + MULTIPART_ALLOWANCE:
            raise file_too_large(self.max_bytes)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            raise file_too_large(self.max_bytes)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


@dataclass
class NormalizedImage:
    """A normalized photo ready to store; ``file`` is a temporary file the caller closes."""

    file: IO[bytes]
    format: str  # "jpeg" or "png": the stored file's format
    source_format: str  # what was uploaded, e.g. "TIFF"
    width: int
    height: int
    size: int
    sha256: str

    @property
    def ext(self) -> str:
        return "jpg" if self.format == "jpeg" else self.format

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"

    def close(self) -> None:
        self.file.close()


def pixel_limit() -> int:
    """The most pixels an upload may have: ``UPLOAD_MAX_PIXELS``, or Pillow's guard if lower."""
    limit: int = settings.UPLOAD_MAX_PIXELS
    if Image.MAX_IMAGE_PIXELS:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
    return limit


def _size_of(upload: IO[bytes]) -> int:
    size = getattr(upload, "size", None)
    if isinstance(size, int):
        return size
    position = upload.tell()
    upload.seek(0, io.SEEK_END)
    end = upload.tell()
    upload.seek(position)
    return end


def open_checked(upload: IO[bytes]) -> ImageFile.ImageFile:
    """Open an upload for decoding, after every check that needs only its header."""
    size = _size_of(upload)
    if size > settings.UPLOAD_MAX_BYTES:
        raise file_too_large(settings.UPLOAD_MAX_BYTES)
    if size == 0:
        raise UnsupportedImage("The file is empty.")
    upload.seek(0)
    try:
        image = Image.open(upload, formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise _too_large(None) from None
    except UnidentifiedImageError:
        raise UnsupportedImage() from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # The header claims a supported format but cannot be parsed.
        raise InvalidImage(details={"reason": str(exc)[:200]}) from None
    if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
        image.close()
        raise UnsupportedImage("Animated or multi-page images are not supported; send a single photo.")
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise InvalidImage()
    if width * height > pixel_limit():
        image.close()
        raise _too_large(image.size)
    return image


def _too_large(size: tuple[int, int] | None) -> ImageTooLarge:
    limit = pixel_limit()
    details: dict[str, Any] = {"max_pixels": limit}
    if size is not None:
        details.update(width=size[0], height=size[1])
    return ImageTooLarge(f"The image has more than {limit / 1_000_000:g} megapixels.", details=details)


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (ValueError, TypeError, KeyError, SyntaxError, OSError):
        # Unreadable EXIF says nothing reliable about orientation; keep the pixels as stored
        # (a copy: the source is closed once decoded).
        return image.copy()


def _to_eight_bit(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # convert("L") would clip everything above 255 to white; scale instead. A 32-bit
        # "I" image is taken as 16-bit data unless its values already fit in 8 bits.
        high = image.getextrema()[1]
        fits = image.mode == "I" and isinstance(high, int | float) and high <= 255
        scale = 1.0 if fits else 1 / 257
        return image.point(lambda value: value * scale).convert("L")
    if image.mode == "F":
        return image.convert("L")
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("PA", "La"):
        return image.convert("RGBA" if image.mode == "PA" else "LA")
    return image


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    if not icc:
        return image
    if image.mode == "LA":
        image = image.convert("RGBA")
    output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image,
            source,
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode=output_mode,
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile: fall back to the plain conversion.
        return image
    return converted if converted is not None else image


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def normalize_image(upload: IO[bytes]) -> NormalizedImage:
    """Validate an upload and return its normalized form (see the module docstring)."""
    with open_checked(upload) as source:
        source_format = str(source.format)
        icc = source.info.get("icc_profile")
        try:
            source.load()
            image: Image.Image = _upright(source)
            image = _to_eight_bit(image)
            image = _to_srgb(image, icc if isinstance(icc, bytes) else None)
            image = _flatten(image)
        except Image.DecompressionBombError:
            raise _too_large(source.size) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
            raise InvalidImage(details={"reason": str(exc)[:200]}) from None

    # Encoders copy some metadata (comments, ICC) from ``info``; with it empty they write
    # none. ``image`` is never the decoded source itself (exif_transpose copies it), so
    # this touches nothing else and costs no second copy of the pixels.
    image.info = {}
    clean = image
    out_format = "jpeg" if source_format in LOSSY_FORMATS else "png"
    output: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (handed to the caller, who closes it)
    try:
        if out_format == "jpeg":
            clean.save(output, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        else:
            clean.save(output, "PNG", compress_level=6)
        digest = hashlib.sha256()
        output.seek(0)
        for chunk in iter(lambda: output.read(1024 * 1024), b""):
            digest.update(chunk)
        size = output.tell()
        output.seek(0)
    except BaseException:
        output.close()
        raise
    return NormalizedImage(
        file=output,
        format=out_format,
        source_format=source_format,
        width=clean.width,
        height=clean.height,
        size=size,
        sha256=digest.hexdigest(),
    )


# Pillow's default; stated so that nothing in the project turns it on by accident:
# a truncated file must be refused, not padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
