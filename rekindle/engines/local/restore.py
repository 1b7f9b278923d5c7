"""Classical photo restoration on the CPU: denoise, scratch and dust removal, local contrast, sharpening, scaling.

Everything here is deterministic OpenCV/numpy work on one image; ``restore_image`` runs the
steps in order and reports after each one. It does not colorize: no classical filter can
tell what colour a grey coat was, so a black-and-white photo stays black and white.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

# OpenCV's stubs type images loosely (any integer or float dtype); these hold 8-bit pixels.
Array = npt.NDArray[Any]
# Called with (step name, fraction of the restoration done) after each step.
StepCallback = Callable[[str, float], None]

# Larger images are refused before decoding (the upload API limits pixels already; this guards the engine).
MAX_INPUT_PIXELS = 80_000_000


class BadImageError(ValueError):
    """The bytes are not an image this engine can read."""


@dataclass(frozen=True)
class RestoreSettings:
    """What a restoration does; ``strength`` 0-1 scales denoising and scratch removal together."""

    megapixels: float = 1.0
    strength: float = 1.0
    jpeg_quality: int = 92


@dataclass(frozen=True)
class RestoreReport:
    width: int
    height: int
    grayscale: bool
    noise_sigma: float
    defect_pixels: int


def decode_image(data: bytes) -> Array:
    """The image as an 8-bit BGR array, turned upright by its EXIF orientation."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_INPUT_PIXELS:
                raise BadImageError(f"The image is too large to process ({opened.width}x{opened.height}).")
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = upright.convert("RGB")
    except BadImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"Not a readable image: {exc}") from exc
    if rgb.width < 8 or rgb.height < 8:
        raise BadImageError(f"The image is too small ({rgb.width}x{rgb.height}).")
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array[:, :, ::-1])


def encode_jpeg(image: Array, *, quality: int, software: str) -> bytes:
    """JPEG bytes, with the producing software named in EXIF so a result says where it came from."""
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))
    exif = Image.Exif()
    exif[0x0131] = software  # Software
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality, optimize=True, exif=exif.tobytes())
    return buffer.getvalue()


def is_grayscale(image: Array) -> bool:
    """Whether the photo has (almost) no colour: scanned black-and-white prints often carry a slight tint."""
    small = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA).astype(np.int16)
    spread = small.max(axis=2) - small.min(axis=2)
    return float(np.percentile(spread, 95)) <= 12.0


def estimate_noise_sigma(gray: Array) -> float:
    """Standard deviation of the image's noise (Immerkaer's method: a Laplacian-difference kernel)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = cv2.filter2D(gray.astype(np.float32), -1, kernel)
    height, width = gray.shape
    interior = np.abs(response[1:-1, 1:-1])
    return float(math.sqrt(math.pi / 2) * interior.sum() / (6 * (width - 2) * (height - 2)))


def scale_factor(width: int, height: int, megapixels: float) -> float:
    return math.sqrt(megapixels * 1_000_000 / (width * height))


def resize(image: Array, factor: float) -> Array:
    if abs(factor - 1.0) < 0.01:
        return image
    height, width = image.shape[:2]
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LANCZOS4
    return cv2.resize(image, size, interpolation=interpolation)


def denoise(image: Array, sigma: float, *, strength: float, grayscale: bool) -> Array:
    """Non-local means, with a filter strength that follows the measured noise (so clean scans stay crisp)."""
    h = float(np.clip(sigma * 1.1, 3.0, 20.0)) * strength
    if h < 1.0:
        return image
    if grayscale:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cleaned = cv2.fastNlMeansDenoising(gray, None, h, 5, 15)
        return cv2.cvtColor(cleaned, cv2.COLOR_GRAY2BGR)
    return cv2.fastNlMeansDenoisingColored(image, None, h, h, 5, 15)


def defect_mask(image: Array, sigma: float, *, strength: float) -> Array:
    """Pixels of scratches (thin bright or dark lines) and dust (small specks), as a 0/255 mask.

    A white top-hat finds what is brighter than its surroundings and thinner than the
    structuring element, a black-hat what is darker; a threshold above the noise keeps
    the clear ones, and a shape filter keeps long thin marks and small specks while
    dropping compact details of the picture (an eye, a button) that a real photo has.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray, (0, 0), 0.7)
    short_side = min(gray.shape)
    # Scratches on a print are a few pixels wide at ~1 MP; scale the probe with the image.
    size = int(np.clip(short_side / 90, 7, 21)) | 1
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    tophat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, element)
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, element)
    response = cv2.max(tophat, blackhat)
    # Weaker strength asks for a clearer defect before touching it.
    threshold = max(24.0, 4.0 * sigma) / max(strength, 0.1)
    candidates = (response > threshold).astype(np.uint8)

    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    lengths = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    # Mean width = 2 x area / boundary pixels (a strip of width w and length L has about 2L of
    # boundary); this holds for straight, curved and crossing scratches, where a box ratio would not.
    boundary = candidates - cv2.erode(candidates, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    boundary_pixels = np.bincount(labels[boundary > 0], minlength=count)
    thin = 2 * areas <= 0.8 * size * np.maximum(boundary_pixels, 1)
    # Scratches, creases and hairs: long and thin. Dust: small specks (lone noisy pixels excluded).
    long_and_thin = (lengths >= size * 2) & thin
    specks = (areas >= 3) & (lengths < size * 2) & (areas <= (size * size) // 2)
    keep = long_and_thin | specks
    keep[0] = False  # the background
    mask = keep[labels].astype(np.uint8) * 255
    # Grow by a pixel so the soft edges of a mark go too.
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))


def inpaint(image: Array, mask: Array) -> Array:
    if not mask.any():
        return image
    return cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA)


def local_contrast(image: Array, *, grayscale: bool) -> Array:
    """CLAHE on the lightness only, so faded prints regain contrast without shifting colours."""
    clahe = cv2.createCLAHE(clipLimit=1.6, tileGridSize=(8, 8))
    if grayscale:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return cv2.cvtColor(clahe.apply(gray), cv2.COLOR_GRAY2BGR)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lightness, a, b = cv2.split(lab)
    return cv2.cvtColor(cv2.merge((clahe.apply(lightness), a, b)), cv2.COLOR_LAB2BGR)


def unsharp_mask(image: Array, *, radius: float = 1.2, amount: float = 0.6, threshold: int = 4) -> Array:
    """Sharpen edges; differences below ``threshold`` are left alone so flat areas do not turn grainy again."""
    blurred = cv2.GaussianBlur(image, (0, 0), radius)
    detail = image.astype(np.int16) - blurred.astype(np.int16)
    sharpened = image.astype(np.float32) + amount * detail.astype(np.float32)
    sharpened = np.where(np.abs(detail) >= threshold, sharpened, image.astype(np.float32))
    return np.clip(sharpened, 0, 255).astype(np.uint8)


def restore_image(image: Array, settings: RestoreSettings, on_step: StepCallback) -> tuple[Array, RestoreReport]:
    """The full restoration of one decoded image."""
    height, width = image.shape[:2]
    factor = scale_factor(width, height, settings.megapixels)
    if factor < 1:
        # Work at the output size: cheaper, and the filters are tuned for about a megapixel.
        image = resize(image, factor)
    on_step("scaled", 0.1)

    grayscale = is_grayscale(image)
    sigma = estimate_noise_sigma(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    mask = defect_mask(image, sigma, strength=settings.strength)
    image = inpaint(image, mask)
    on_step("scratches", 0.35)

    image = denoise(image, sigma, strength=settings.strength, grayscale=grayscale)
    on_step("denoised", 0.7)

    image = local_contrast(image, grayscale=grayscale)
    on_step("contrast", 0.8)

    if factor > 1:
        image = resize(image, factor)
    image = unsharp_mask(image)
    on_step("sharpened", 0.95)

    out_height, out_width = image.shape[:2]
    report = RestoreReport(
        width=out_width,
        height=out_height,
        grayscale=grayscale,
        noise_sigma=sigma,
        defect_pixels=int(np.count_nonzero(mask)),
    )
    return image, report
