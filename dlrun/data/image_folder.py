"""`image_folder`: PNG or JPEG files, one sub-folder per class (FOLDER/cat/1.png, FOLDER/dog/2.jpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np

from dlrun.data.image_files import ImageFiles, header_size, read_pixels
from dlrun.data.lazy import InMemory, stream_it
from dlrun.data.raw import DATASETS, RawData
from dlrun.errors import DataError
from dlrun.registry import Range

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUT = "one sub-folder per class holding that class's PNG or JPEG files (FOLDER/cat/1.png, FOLDER/dog/2.png)"


@DATASETS.register("image_folder", "Your images: data.path=FOLDER with one sub-folder of PNG/JPEG files per class")
def image_folder(path: str | None = None, image_size: Optional[Annotated[int, Range(ge=1)]] = None,
                 grayscale: bool = False, in_memory: InMemory = "auto") -> RawData:
    """Images as pixel values 0-255, one class per sub-folder (sorted by name).

    Each image is converted to RGB (or to one gray channel with grayscale) and,
    with image_size, resized to image_size x image_size; without it all images
    must have one size. The raw features, and so the served model's input, are
    the pixels flattened in (channel, row, column) order; the model sees
    (channels, height, width).

    With in_memory false (or auto, when the pixels would take more than
    dlrun.data.lazy.IN_MEMORY_LIMIT_BYTES as float32) the images are decoded a batch
    at a time while training (ImageFiles); only the first is decoded here, and the
    others' sizes are read from their headers when there is no image_size.
    """
    if not path:
        raise DataError(f"data=image_folder needs the folder: set data.path=FOLDER with {LAYOUT}.")
    folder = Path(path)
    classes = _class_folders(folder)
    files = [(label, file) for label, class_dir in enumerate(classes) for file in _image_files(class_dir)]
    mode = "L" if grayscale else "RGB"
    resize = (image_size, image_size) if image_size is not None else None
    first = read_pixels(files[0][1], mode, resize)  # (C, H, W): the first image must be readable
    y = np.array([label for label, _ in files], dtype=np.int64)
    names = [c.name for c in classes]
    if stream_it(in_memory, len(files) * first.size * 4):
        size = (first.shape[2], first.shape[1])
        if resize is None:
            for _, file in files[1:]:
                _same_size(folder, files[0][1], size, file, header_size(file))
        features = ImageFiles([file for _, file in files], mode, size, resize=resize is not None)
        return RawData(features, y, "classification", tuple(int(d) for d in first.shape), names, image=True)
    pixels = [first]
    for _, file in files[1:]:
        pixels.append(read_pixels(file, mode, resize))
        if resize is None:
            _same_size(folder, files[0][1], first.shape[1:], file, pixels[-1].shape[1:], height_first=True)
    stacked = np.stack(pixels)
    x = stacked.reshape(len(stacked), -1).astype(np.float32)
    return RawData(x, y, "classification", tuple(int(d) for d in stacked.shape[1:]), names, image=True)


def _same_size(folder: Path, first_file: Path, first_size, file: Path, size, height_first: bool = False) -> None:
    """A DataError unless `file` has the first image's size ((width, height), or (height, width))."""
    if tuple(size) == tuple(first_size):
        return
    (w0, h0), (w1, h1) = (first_size[::-1], size[::-1]) if height_first else (first_size, size)
    raise DataError(f"images in {folder} differ in size: '{first_file}' is {w0}x{h0} pixels but '{file}' is "
                    f"{w1}x{h1}. Set data.image_size=N to resize every image to N x N.")


def _class_folders(folder: Path) -> list[Path]:
    if not folder.exists():
        raise DataError(f"data.path: no folder at '{folder}' (from {Path.cwd()}). Give a folder with {LAYOUT}.")
    if not folder.is_dir():
        raise DataError(f"data.path: '{folder}' is a file; data=image_folder needs a folder with {LAYOUT}.")
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    classes = sorted((p for p in entries if p.is_dir()), key=lambda p: p.name)
    if not entries:
        raise DataError(f"data.path: the folder '{folder}' is empty; it needs {LAYOUT}.")
    if not classes and any(_is_image(p) for p in entries):
        raise DataError(f"data.path: '{folder}' holds images but no class folders; move each class's images into "
                        f"its own sub-folder: {LAYOUT}.")
    if len(classes) < 2:
        found = f"one class folder ('{classes[0].name}')" if classes else "no sub-folders"
        raise DataError(f"data.path: '{folder}' has {found}; classification needs two or more: {LAYOUT}.")
    return classes


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(p for p in class_dir.iterdir() if _is_image(p))
    if not files:
        others = sorted(p.name for p in class_dir.iterdir() if not p.name.startswith("."))
        found = f" (it holds: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
        raise DataError(f"class folder '{class_dir}' has no PNG or JPEG files{found}. Add images or remove the folder.")
    return files


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
