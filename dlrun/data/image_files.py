"""Image files decoded a batch at a time: `image_folder`'s features when they are streamed.

`ImageFiles` holds the paths, the colour mode and the size, so it pickles cheaply into
DataLoader workers; `rows()` opens, decodes and resizes only the files asked for.
`read_pixels` is the one decoder, used by the in-memory path too, so a streamed image and
an image held in memory are the same pixels. PIL is imported where an image is read:
config validation imports the sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.errors import DataError

READ_BYTES = 1 << 20  # the fingerprint reads files in blocks of this size


def read_pixels(file: str | Path, mode: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as uint8 (channels, height, width) in `mode` ("RGB" or "L"), resized to `size` (width,
    height) when given; a DataError naming the file when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image = image.convert(mode)  # convert loads the pixels, so a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image '{file}': {error}. Replace or remove the file.") from None
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def header_size(file: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header only (PIL opens lazily: no pixels are decoded)."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image '{file}': {error}. Replace or remove the file.") from None


class ImageFiles:
    """A LazyFeatures (dlrun.data.lazy) over image files: row i is file i's pixels, flattened in (channel,
    row, column) order, as the in-memory path gives them.

    Args:
        files: the image files, in row order.
        mode: "RGB" or "L" (one gray channel).
        size: (width, height) every image has or is resized to.
        resize: resize each image to `size` (data.image_size); otherwise an image of another size is a
            DataError (the sizes were checked from the headers when the data was loaded).
    """

    def __init__(self, files: list[str | Path], mode: str, size: tuple[int, int], resize: bool):
        self.files = [str(file) for file in files]
        self.mode, self.size, self.resize = mode, (int(size[0]), int(size[1])), resize
        self.channels = 1 if mode == "L" else 3
        self.shape = (len(self.files), self.channels * self.size[0] * self.size[1])

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices) -> np.ndarray:
        """float32 pixels (len(indices), channels * height * width) of the files at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), self.shape[1]), dtype=np.float32)
        for place, index in enumerate(indices):
            file = self.files[index]
            pixels = read_pixels(file, self.mode, self.size if self.resize else None)
            if pixels.shape[1:] != (self.size[1], self.size[0]):
                (w, h), found = self.size, f"{pixels.shape[2]}x{pixels.shape[1]}"
                raise DataError(f"image '{file}' is now {found} pixels; the others are {w}x{h}. Replace it with "
                                "an image of their size, or set data.image_size=N to resize every image.")
            out[place] = pixels.reshape(-1)
        return out

    def fingerprint_into(self, digest) -> None:
        """The mode, the size and every file's bytes in row order (no decoding)."""
        digest.update(f"images:{self.mode}:{self.size}:{self.resize}:{len(self.files)}".encode())
        for file in self.files:
            try:
                with open(file, "rb") as handle:
                    digest.update(str(Path(file).stat().st_size).encode())
                    while block := handle.read(READ_BYTES):
                        digest.update(block)
            except OSError as error:
                raise DataError(f"cannot read image '{file}': {error.strerror or error}. Replace or remove the "
                                "file.") from None

    def describe(self) -> str:
        return str(Path(self.files[0]).parent.parent) if self.files else ""
