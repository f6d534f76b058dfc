"""`image_folder`: PNG or JPEG files, one sub-folder per class (FOLDER/cat/1.png, FOLDER/dog/2.jpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np

from dlrun.data.raw import DATASETS, RawData
from dlrun.errors import DataError
from dlrun.registry import Range

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUT = "one sub-folder per class holding that class's PNG or JPEG files (FOLDER/cat/1.png, FOLDER/dog/2.png)"


@DATASETS.register("image_folder", "Your images: data.path=FOLDER with one sub-folder of PNG/JPEG files per class")
def image_folder(path: str | None = None, image_size: Optional[Annotated[int, Range(ge=1)]] = None,
                 grayscale: bool = False) -> RawData:
    """Images as pixel values 0-255, one class per sub-folder (sorted by name).

    Each image is converted to RGB (or to one gray channel with grayscale) and,
    with image_size, resized to image_size x image_size; without it all images
    must have one size. The raw features, and so the served model's input, are
    the pixels flattened in (channel, row, column) order; the model sees
    (channels, height, width).
    """
    if not path:
        raise DataError(f"data=image_folder needs the folder: set data.path=FOLDER with {LAYOUT}.")
    folder = Path(path)
    classes = _class_folders(folder)
    files = [(label, file) for label, class_dir in enumerate(classes) for file in _image_files(class_dir)]
    mode = "L" if grayscale else "RGB"
    pixels, first_size = [], None
    for _, file in files:
        image = _read_image(file, mode)
        if image_size is not None:
            image = image.resize((image_size, image_size), _bilinear())
        elif first_size is None:
            first_size = (files[0][1], image.size)
        elif image.size != first_size[1]:
            (w0, h0), (w1, h1) = first_size[1], image.size
            raise DataError(f"images in {folder} differ in size: '{first_size[0]}' is {w0}x{h0} pixels but '{file}' is "
                            f"{w1}x{h1}. Set data.image_size=N to resize every image to N x N.")
        array = np.asarray(image, dtype=np.uint8)
        pixels.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))  # (C, H, W)
    stacked = np.stack(pixels)
    x = stacked.reshape(len(stacked), -1).astype(np.float32)
    y = np.array([label for label, _ in files], dtype=np.int64)
    return RawData(x, y, "classification", tuple(int(d) for d in stacked.shape[1:]),
                   [c.name for c in classes], image=True)


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


def _read_image(file: Path, mode: str):
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image.convert(mode)  # convert loads the pixels, so a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image '{file}': {error}. Replace or remove the file.") from None


def _bilinear():
    from PIL import Image

    return Image.Resampling.BILINEAR
