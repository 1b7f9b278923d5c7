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

import contextlib
import hashlib
import io
import shutil
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from rekindle.bounded import BoundExceeded, run_bounded
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


class ImageTooSmall(InvalidRequest):
    code = "image_too_small"
    message = "The image is too small to restore."


class ImageAspectUnsupported(InvalidRequest):
    code = "image_aspect_unsupported"
    message = "The image is too long and narrow to restore."


class ImageTooComplex(InvalidRequest):
    code = "image_too_complex"
    message = "The image needs more time or memory to decode than a photo should; it cannot be used."


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


@dataclass(frozen=True)
class Limits:
    """What an upload may be, read from settings in the caller's process (the decoding child reads none)."""

    max_pixels: int
    min_side: int
    max_aspect: float

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(max_pixels=pixel_limit(), min_side=settings.UPLOAD_MIN_SIDE, max_aspect=settings.UPLOAD_MAX_ASPECT)


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


def _open_checked(fp: IO[bytes], limits: Limits) -> ImageFile.ImageFile:
    """Open an image for decoding, after every check that needs only its header."""
    try:
        image = Image.open(fp, formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise _too_large(None, limits) from None
    except UnidentifiedImageError:
        raise UnsupportedImage() from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # The header claims a supported format but cannot be parsed.
        raise InvalidImage(details={"reason": str(exc)[:200]}) from None
    try:
        if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
            raise UnsupportedImage("Animated or multi-page images are not supported; send a single photo.")
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImage()
        if width * height > limits.max_pixels:
            raise _too_large(image.size, limits)
        if min(width, height) < limits.min_side:
            raise ImageTooSmall(
                f"The image must be at least {limits.min_side} pixels on each side; this one is {width}x{height}.",
                details={"min_side": limits.min_side, "width": width, "height": height},
            )
        if max(width, height) / min(width, height) > limits.max_aspect:
            raise ImageAspectUnsupported(
                f"The image may be at most {limits.max_aspect:g} times as long as it is wide; "
                f"this one is {width}x{height}.",
                details={"max_aspect": limits.max_aspect, "width": width, "height": height},
            )
    except BaseException:
        image.close()
        raise
    return image


def _too_large(size: tuple[int, int] | None, limits: Limits) -> ImageTooLarge:
    details: dict[str, Any] = {"max_pixels": limits.max_pixels}
    if size is not None:
        details.update(width=size[0], height=size[1])
    return ImageTooLarge(f"The image has more than {limits.max_pixels / 1_000_000:g} megapixels.", details=details)


# EXIF orientation -> the transpose that makes the photo upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when there is none or the EXIF cannot be read."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _upright(image: Image.Image) -> Image.Image:
    """The photo turned upright by its EXIF orientation.

    ImageOps.exif_transpose would also rewrite the EXIF block into the result, which
    raises on many malformed blocks; the metadata is dropped anyway, so only the
    orientation is read here.
    """
    method = _ORIENTATION.get(_orientation(image))
    return image.transpose(method) if method is not None else image


def _to_eight_bit(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # convert("L") would clip everything above 255 to white; scale instead. A 32-bit
        # "I" image is taken as 16-bit data unless its values already fit in 8 bits. The
        # 16-bit modes (either byte order) become "I" first, which ``point`` can scale.
        wide = image if image.mode == "I" else image.convert("I")
        high = wide.getextrema()[1]
        fits = image.mode == "I" and isinstance(high, int | float) and high <= 255
        scale = 1.0 if fits else 1 / 257
        return wide.point(lambda value: value * scale).convert("L")
    if image.mode == "F":
        # Floating point samples: 0-1 (the usual scale of float TIFFs), 0-255, or wider.
        high = image.getextrema()[1]
        top = float(high) if isinstance(high, int | float) else 1.0
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
        return image.point(lambda value: value * scale).convert("L")
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


# Rows flattened at a time: the RGB copy of a transparent photo is made a strip at a time.
_FLATTEN_ROWS = 256


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid over white.

    A transparent photo is converted a strip of rows at a time into one RGB image, so the
    largest one (50 MP RGBA: 200 MB of pixels) needs its RGB result and a strip on top
    of itself, not two more full copies.
    """
    if image.mode not in _ALPHA_MODES:
        return image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    flat = Image.new("RGB", image.size, (255, 255, 255))
    for top in range(0, height, _FLATTEN_ROWS):
        box = (0, top, width, min(height, top + _FLATTEN_ROWS))
        strip = image.crop(box).convert("RGBA")
        flat.paste(strip.convert("RGB"), box[:2], mask=strip.getchannel("A"))
    return flat


def normalize_file(source_path: str, output_path: str, limits: Limits) -> tuple[str, str, int, int, int, str]:
    """Check and normalize the photo at ``source_path`` into ``output_path``, in this process.

    Returns ``(format, source_format, width, height, size, sha256)``; raises the errors
    above. Reads no settings: :func:`normalize_image` runs it in a bounded child process.
    """
    with open(source_path, "rb") as fp:
        # Not a ``with`` on the image: each step below replaces ``image``, and the previous
        # copy of the pixels must be free to go (a context manager would hold the first).
        image: Image.Image = _open_checked(fp, limits)
        source_format = str(image.format)
        icc = image.info.get("icc_profile")
        dimensions = image.size
        try:
            image.load()
            image = _upright(image)
            image = _to_eight_bit(image)
            image = _to_srgb(image, icc if isinstance(icc, bytes) else None)
            image = _flatten(image)
        except Image.DecompressionBombError:
            raise _too_large(dimensions, limits) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
            raise InvalidImage(details={"reason": str(exc)[:200]}) from None
        # Encoders copy some metadata (comments, ICC) from ``info``; with it empty they
        # write none.
        image.info = {}
        out_format = "jpeg" if source_format in LOSSY_FORMATS else "png"
        with open(output_path, "wb") as output:
            if out_format == "jpeg":
                image.save(output, "JPEG", quality=JPEG_QUALITY, subsampling=0)
            else:
                image.save(output, "PNG", compress_level=6)
        width, height = image.size
        del image
    digest = hashlib.sha256()
    with open(output_path, "rb") as written:
        for chunk in iter(lambda: written.read(1024 * 1024), b""):
            digest.update(chunk)
        size = written.tell()
    return out_format, source_format, width, height, size, digest.hexdigest()


def normalize_image(upload: IO[bytes]) -> NormalizedImage:
    """Validate an upload and return its normalized form (see the module docstring).

    Decoding runs in a child process bounded by ``UPLOAD_DECODE_SECONDS`` and
    ``UPLOAD_DECODE_MEMORY_MB`` (``rekindle.bounded``): a file that needs more is 400
    ``image_too_complex``, and nothing it allocated stays in this process.
    """
    size = _size_of(upload)
    if size > settings.UPLOAD_MAX_BYTES:
        raise file_too_large(settings.UPLOAD_MAX_BYTES)
    if size == 0:
        raise UnsupportedImage("The file is empty.")
    with contextlib.ExitStack() as cleanup:
        path_of = getattr(upload, "temporary_file_path", None)
        if callable(path_of):
            source_path = str(path_of())
        else:
            copy = cleanup.enter_context(tempfile.NamedTemporaryFile(prefix="rekindle-upload-", dir=_temp_dir()))
            upload.seek(0)
            shutil.copyfileobj(upload, copy)
            copy.flush()
            source_path = copy.name
        output = tempfile.NamedTemporaryFile(prefix="rekindle-normalized-", dir=_temp_dir())  # noqa: SIM115
        try:
            fmt, source_format, width, height, stored, sha256 = run_bounded(
                normalize_file,
                source_path,
                output.name,
                Limits.from_settings(),
                seconds=settings.UPLOAD_DECODE_SECONDS,
                memory_bytes=settings.UPLOAD_DECODE_MEMORY_MB * 1024 * 1024,
            )
        except BoundExceeded as exc:
            output.close()
            raise ImageTooComplex(details={"bound": exc.bound}) from None
        except BaseException:
            output.close()
            raise
    output.seek(0)
    return NormalizedImage(
        file=output,
        format=fmt,
        source_format=source_format,
        width=width,
        height=height,
        size=stored,
        sha256=sha256,
    )


def _temp_dir() -> str | None:
    return settings.FILE_UPLOAD_TEMP_DIR or None


# Pillow's default; stated so that nothing in the project turns it on by accident:
# a truncated file must be refused, not padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
