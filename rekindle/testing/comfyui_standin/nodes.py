"""The stand-in's node classes: ComfyUI's core image nodes run for real, model nodes take a set time.

Images are float32 arrays shaped ``(batch, height, width, 3)`` in 0..1, as in ComfyUI.
Model-based nodes (loaders, text encoders, samplers, VAE) have no weights here: they
carry the input image through (``Carry``) so a production graph still yields a real
image or video, and the samplers spend the configured time, reporting
``progress{value, max}`` per step like the real ones.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import os
import random
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"

# The model files a production deployment installs (workflows/restore.json, animate_*.json).
DEFAULT_MODELS = (
    "flux1-dev-kontext_fp8_scaled.safetensors",
    "clip_l.safetensors",
    "t5xxl_fp8_e4m3fn_scaled.safetensors",
    "ae.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "wan_2.1_vae.safetensors",
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
    "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
    "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
)

# Inputs whose choices are model files; everything else keeps the recorded lists.
MODEL_INPUTS = {
    ("UNETLoader", "unet_name"),
    ("DualCLIPLoader", "clip_name1"),
    ("DualCLIPLoader", "clip_name2"),
    ("CLIPLoader", "clip_name"),
    ("VAELoader", "vae_name"),
    ("LoraLoaderModelOnly", "lora_name"),
    ("CheckpointLoaderSimple", "ckpt_name"),
}
SAMPLERS = {"KSampler", "KSamplerAdvanced"}

# FluxKontextImageScale's preferred sizes (ComfyUI comfy_extras/nodes_flux.py).
KONTEXT_RESOLUTIONS = [
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688),
    (1568, 672),
]  # fmt: skip

_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class Interrupted(Exception):
    """The running prompt was interrupted (POST /interrupt)."""


@dataclass
class Carry:
    """What a model node outputs here: the image the graph started from, and a frame count for video latents."""

    image: np.ndarray | None = None
    frames: int | None = None


@dataclass
class Video:
    frames: np.ndarray
    fps: float


@dataclass
class ExecContext:
    """What a node may use while it runs: folders, timings, progress and the interrupt flag."""

    input_dir: Path
    output_dir: Path
    temp_dir: Path
    sampler_seconds: float
    report_progress: Callable[[int, int], Awaitable[None]]
    interrupted: Callable[[], bool]
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.interrupted():
            raise Interrupted()


NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]
NodeFunction = Callable[[ExecContext, dict[str, Any]], Awaitable[NodeResult]]


# --- image helpers --------------------------------------------------------------
def to_pil(frame: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def resize(images: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    if method not in _RESAMPLE:
        raise ValueError(f"Unknown upscale method {method!r}")
    width, height = max(1, int(width)), max(1, int(height))
    return np.stack([from_pil(to_pil(frame).resize((width, height), _RESAMPLE[method])) for frame in images])


def _gaussian(radius: int, sigma: float) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    result: np.ndarray = kernel / kernel.sum()
    return result


def gaussian_blur(images: np.ndarray, radius: int, sigma: float) -> np.ndarray:
    kernel = _gaussian(radius, sigma)
    out = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    out = sum(kernel[i] * out[:, i : i + out.shape[1] - 2 * radius, :, :] for i in range(len(kernel)))
    out = sum(kernel[i] * out[:, :, i : i + out.shape[2] - 2 * radius, :] for i in range(len(kernel)))
    return np.asarray(out, dtype=np.float32)


def _counter_name(folder: Path, prefix: str, suffix: str) -> tuple[Path, str, str]:
    """The next ``{prefix}_{counter:05}_.{suffix}`` in the prefix's subfolder, the way SaveImage numbers files."""
    subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
    if ".." in subfolder.split("/"):
        raise ValueError("Saving outside the output folder is not allowed.")
    target = folder / subfolder
    target.mkdir(parents=True, exist_ok=True)
    counter = 1
    for existing in target.glob(f"{base}_*_.{suffix}"):
        number = existing.name[len(base) + 1 : -len(suffix) - 2]
        if number.isdigit():
            counter = max(counter, int(number) + 1)
    filename = f"{base}_{counter:05}_.{suffix}"
    return target / filename, filename, subfolder


def first_image(inputs: Mapping[str, Any], *names: str) -> Carry:
    """The image carried by the first of ``names`` that has one (or by any input)."""
    ordered = [inputs[name] for name in names if name in inputs] + list(inputs.values())
    for value in ordered:
        if isinstance(value, np.ndarray):
            return Carry(value)
        if isinstance(value, Carry) and value.image is not None:
            return value
    return Carry(None)


# --- core nodes, run for real ------------------------------------------------------
async def load_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    path = ctx.input_dir / str(inputs["image"])
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    array = from_pil(image)[None]
    mask = np.zeros(array.shape[1:3], dtype=np.float32)[None]
    return (array, mask), None


async def empty_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    color = int(inputs.get("color", 0))
    rgb = np.array([(color >> 16) & 255, (color >> 8) & 255, color & 255], dtype=np.float32) / 255.0
    shape = (int(inputs["batch_size"]), int(inputs["height"]), int(inputs["width"]), 3)
    return (np.broadcast_to(rgb, shape).copy(),), None


async def scale_to_total_pixels(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images: np.ndarray = inputs["image"]
    total = int(float(inputs["megapixels"]) * 1024 * 1024)
    scale = math.sqrt(total / (images.shape[2] * images.shape[1]))
    width, height = round(images.shape[2] * scale), round(images.shape[1] * scale)
    return (await asyncio.to_thread(resize, images, width, height, str(inputs["upscale_method"])),), None


async def image_scale(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images: np.ndarray = inputs["image"]
    width, height = int(inputs["width"]), int(inputs["height"])
    if width == 0 and height == 0:
        return (images,), None
    if width == 0:
        width = max(1, round(images.shape[2] * height / images.shape[1]))
    if height == 0:
        height = max(1, round(images.shape[1] * width / images.shape[2]))
    return (await asyncio.to_thread(resize, images, width, height, str(inputs["upscale_method"])),), None


async def image_scale_by(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images: np.ndarray = inputs["image"]
    scale = float(inputs["scale_by"])
    width, height = round(images.shape[2] * scale), round(images.shape[1] * scale)
    return (await asyncio.to_thread(resize, images, width, height, str(inputs["upscale_method"])),), None


async def image_sharpen(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images: np.ndarray = inputs["image"]
    radius, sigma, alpha = int(inputs["sharpen_radius"]), float(inputs["sigma"]), float(inputs["alpha"])
    if alpha == 0:
        return (images,), None
    # ComfyUI's kernel: the identity plus alpha*10 times (identity - gaussian).
    strength = alpha * 10
    blurred = await asyncio.to_thread(gaussian_blur, images, radius, sigma)
    return (np.clip((strength + 1) * images - strength * blurred, 0, 1),), None


async def image_blur(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images: np.ndarray = inputs["image"]
    radius, sigma = int(inputs["blur_radius"]), float(inputs["sigma"])
    return (await asyncio.to_thread(gaussian_blur, images, radius, sigma),), None


async def image_invert(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return (1.0 - inputs["image"],), None


async def repeat_image_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return (np.tile(inputs["image"], (int(inputs["amount"]), 1, 1, 1)),), None


async def image_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    first: np.ndarray = inputs["image1"]
    second: np.ndarray = inputs["image2"]
    if second.shape[1:3] != first.shape[1:3]:
        second = resize(second, first.shape[2], first.shape[1], "bilinear")
    return (np.concatenate([first, second]),), None


def _save_pngs(images: np.ndarray, folder: Path, prefix: str, file_type: str) -> dict[str, Any]:
    results = []
    for frame in images:
        path, filename, subfolder = _counter_name(folder, prefix, "png")
        to_pil(frame).save(path, compress_level=4)
        results.append({"filename": filename, "subfolder": subfolder, "type": file_type})
    return {"images": results}


async def save_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "ComfyUI"))
    return (), await asyncio.to_thread(_save_pngs, inputs["images"], ctx.output_dir, prefix, "output")


async def preview_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))  # noqa: S311
    return (), await asyncio.to_thread(_save_pngs, inputs["images"], ctx.temp_dir, prefix, "temp")


def _save_webp(
    images: np.ndarray, folder: Path, prefix: str, fps: float, lossless: bool, quality: int
) -> dict[str, Any]:
    path, filename, subfolder = _counter_name(folder, prefix, "webp")
    frames = [to_pil(frame) for frame in images]
    frames[0].save(
        path,
        save_all=True,
        append_images=frames[1:],
        duration=int(1000.0 / fps),
        lossless=lossless,
        quality=quality,
        loop=0,
    )
    return {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}


async def save_animated_webp(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    ui = await asyncio.to_thread(
        _save_webp,
        inputs["images"],
        ctx.output_dir,
        str(inputs.get("filename_prefix", "ComfyUI")),
        float(inputs.get("fps", 6.0)),
        bool(inputs.get("lossless", True)),
        int(inputs.get("quality", 80)),
    )
    return (), ui


async def create_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return (Video(np.asarray(inputs["images"]), float(inputs["fps"])),), None


def _write_mp4(video: Video, path: Path) -> None:
    frames = video.frames
    # yuv420p needs even sizes, as ComfyUI's own encoder does.
    height, width = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    rate = Fraction(video.fps).limit_denominator(1000)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            pixels = np.clip(frame[:height, :width] * 255.0 + 0.5, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _save_video(video: Video, folder: Path, prefix: str) -> dict[str, Any]:
    path, filename, subfolder = _counter_name(folder, prefix, "mp4")
    _write_mp4(video, path)
    return {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}


async def save_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "video/ComfyUI"))
    return (), await asyncio.to_thread(_save_video, inputs["video"], ctx.output_dir, prefix)


async def flux_kontext_image_scale(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images: np.ndarray = inputs["image"]
    aspect = images.shape[2] / images.shape[1]
    width, height = min(KONTEXT_RESOLUTIONS, key=lambda size: abs(aspect - size[0] / size[1]))
    return (await asyncio.to_thread(resize, images, width, height, "lanczos"),), None


# --- model nodes: no weights, a set time, the image carried through ------------------
async def passthrough(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return (first_image(inputs, "latent_image", "samples", "pixels", "start_image", "image"),), None


async def pass_three(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    carried = first_image(inputs)
    return (carried, carried, carried), None


async def vae_encode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return (Carry(inputs["pixels"]),), None


async def empty_latent(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    shape = (int(inputs.get("batch_size", 1)), int(inputs["height"]), int(inputs["width"]), 3)
    return (Carry(np.zeros(shape, dtype=np.float32)),), None


async def sampler(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    steps = int(inputs.get("steps", 20))
    if "end_at_step" in inputs:
        steps = max(1, min(steps, int(inputs["end_at_step"])) - int(inputs.get("start_at_step", 0)))
    per_step = ctx.sampler_seconds / steps
    for step in range(steps):
        # Checked often, as ComfyUI's samplers do, so an interrupt lands within ~50 ms.
        step_end = time.monotonic() + per_step
        while True:
            ctx.check()
            left = step_end - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.05))
        await ctx.report_progress(step + 1, steps)
    ctx.check()
    return (first_image(inputs, "latent_image"),), None


async def wan_image_to_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width, height, length = int(inputs["width"]), int(inputs["height"]), int(inputs["length"])
    start = inputs.get("start_image")
    if isinstance(start, np.ndarray):
        frame = await asyncio.to_thread(resize, start[:1], width, height, "bilinear")
    else:
        frame = np.zeros((1, height, width, 3), dtype=np.float32)
    conditioning = Carry(None)
    return (conditioning, conditioning, Carry(frame, frames=length)), None


async def vae_decode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    carried = first_image(inputs, "samples")
    image = carried.image if carried.image is not None else np.zeros((1, 64, 64, 3), dtype=np.float32)
    if carried.frames:
        image = _gentle_zoom(image[0], carried.frames)
    return (image,), None


def _gentle_zoom(frame: np.ndarray, count: int) -> np.ndarray:
    """Frames of a slow zoom into ``frame``, so a decoded video is a video and not one still repeated."""
    height, width = frame.shape[:2]
    source = to_pil(frame)
    frames = []
    for index in range(count):
        crop = 1.0 - 0.1 * index / max(1, count - 1)
        w, h = width * crop, height * crop
        box = ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)
        frames.append(from_pil(source.resize((width, height), Image.Resampling.BILINEAR, box=box)))
    return np.stack(frames)


NODES: dict[str, NodeFunction] = {
    "LoadImage": load_image,
    "EmptyImage": empty_image,
    "ImageScaleToTotalPixels": scale_to_total_pixels,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageSharpen": image_sharpen,
    "ImageBlur": image_blur,
    "ImageInvert": image_invert,
    "RepeatImageBatch": repeat_image_batch,
    "ImageBatch": image_batch,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveAnimatedWEBP": save_animated_webp,
    "CreateVideo": create_video,
    "SaveVideo": save_video,
    "FluxKontextImageScale": flux_kontext_image_scale,
    "UNETLoader": passthrough,
    "DualCLIPLoader": passthrough,
    "CLIPLoader": passthrough,
    "VAELoader": passthrough,
    "LoraLoaderModelOnly": passthrough,
    "ModelSamplingSD3": passthrough,
    "CLIPTextEncode": passthrough,
    "ReferenceLatent": passthrough,
    "FluxGuidance": passthrough,
    "ConditioningZeroOut": passthrough,
    "VAEEncode": vae_encode,
    "EmptyLatentImage": empty_latent,
    "KSampler": sampler,
    "KSamplerAdvanced": sampler,
    "WanImageToVideo": wan_image_to_video,
    "VAEDecode": vae_decode,
    "CheckpointLoaderSimple": pass_three,
}


def recorded_object_info() -> dict[str, Any]:
    """``/object_info`` as recorded from ComfyUI 0.3.64 (496 node classes, no model files installed)."""
    with gzip.open(FIXTURES / "object_info_full.json.gz", "rt", encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def build_object_info(
    base: Mapping[str, Any],
    *,
    models: list[str],
    input_files: list[str],
    missing_classes: set[str],
) -> dict[str, Any]:
    """The recorded ``/object_info`` with this node's model files and input folder filled in."""
    info: dict[str, Any] = {}
    for class_type, entry in base.items():
        if class_type in missing_classes:
            continue
        if class_type == "LoadImage" or any(class_type == owner for owner, _ in MODEL_INPUTS):
            entry = json.loads(json.dumps(entry))
            for section in ("required", "optional"):
                for name, spec in (entry["input"].get(section) or {}).items():
                    if (class_type, name) in MODEL_INPUTS:
                        extra = ["pixel_space"] if class_type == "VAELoader" else []
                        spec[0] = sorted(models) + extra
                    elif class_type == "LoadImage" and name == "image":
                        spec[0] = sorted(input_files)
        info[class_type] = entry
    return info


def list_input_files(input_dir: Path) -> list[str]:
    files = []
    for root, _dirs, names in os.walk(input_dir):
        relative = Path(root).relative_to(input_dir)
        for name in names:
            files.append(str(relative / name) if str(relative) != "." else name)
    return files
