"""Preprocessed-image cache: every image is decoded and resized once, then reused by every run.

A cache file (a "pool") holds the deterministic part of a benchmark's preprocessing for the images
of one dataset folder at one (image size, resize mode, kind), as uint8 CHW tensors:

- VTAB-1K: the image resized to image_size x image_size (the whole transform; VTAB has no augmentation);
- FGVC evaluation splits: resized (short side image_size x 256 / 224) and centre-cropped;
- FGVC training split: only resized (the pre-crop size); the random crop and flip run on the cached
  tensors, drawing from torch's global RNG exactly as torchvision's RandomCrop / RandomHorizontalFlip do.

Normalisation ([0, 1], then ImageNet mean / std) runs per batch on the training device, and the
split's uint8 images are held on the GPU when they fit. `pil` resizes already produce uint8, so cached
inputs equal the uncached ones bit for bit; `tf1` resizes produce floats, which the cache rounds to the
nearest integer: cached inputs differ from uncached ones by at most 0.5 / 255 / std (0.0087535 in
normalised units for ImageNet's smallest std, 0.224, that of the green channel).

Validity: each entry records its image's path, file size and modification time and a CRC-32 of its
pixels; the split file is parsed on every run, and its SHA-256 is kept in the pool's manifest. An
entry whose image changed, or whose pixels fail their checksum, is decoded again; a file that cannot
be read or does not have the expected structure is rebuilt. Pools are written atomically under a file
lock, so concurrent runs of a sweep share them safely. A split that reuses images of another split
(VTAB's train800val200) decodes nothing new. A cache that cannot be written (full disk, read-only
folder) gives one warning per folder; the run then keeps the images it decoded in memory (the same
inputs) and the previous pool file, if any, stays whole.

Location (`--cache-dir`): by default `<data root>/.vapt-cache` when the data root is writable, else
`$XDG_CACHE_HOME/vapt` (`~/.cache/vapt`); pools of different data folders never collide (the folder's
absolute path is part of the pool's name).
"""

from __future__ import annotations

import hashlib
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from vapt.data import images as image_io
from vapt.data.images import ImageListDataset
from vapt.data.resize import geometric_steps, resolve_resize, to_uint8_tensor
from vapt.io import save_torch_atomic

POOL_VERSION = 1
CACHE_FOLDER = ".vapt-cache"
# the uint8 images of a split move to the GPU when they take at most this share of its free memory
GPU_SHARE = 0.5


def default_cache_dir(data_root: str | os.PathLike) -> Path:
    """`<data root>/.vapt-cache` when the data root is writable, else `$XDG_CACHE_HOME/vapt` (`~/.cache/vapt`)."""
    root = Path(data_root)
    if root.is_dir() and os.access(root, os.W_OK):
        return root / CACHE_FOLDER
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vapt"


def pool_kind(benchmark: str, train: bool, image_size: int, resize: str, decode: str = "pil") -> str:
    """A name for what a pool stores, e.g. `resize224_tf1_tfds`, `short256-center224_pil`, `short256_pil`.

    PIL-decoded pools keep the names they had before the decoder was a choice, so they stay valid.
    """
    suffix = "" if decode == "pil" else f"_{decode}"
    if benchmark == "vtab1k":
        return f"resize{image_size}_{resize}{suffix}"
    short = round(image_size * 256 / 224)
    return (f"short{short}_{resize}" if train else f"short{short}-center{image_size}_{resize}") + suffix


def split_file_of(dataset: ImageListDataset) -> Path | None:
    """The split file a VTAB-1K or FGVC dataset was read from (None for other datasets)."""
    if hasattr(dataset, "task_dir"):
        return Path(dataset.task_dir) / f"{dataset.split}.txt"
    if hasattr(dataset, "dataset_dir"):
        return Path(dataset.dataset_dir) / f"{dataset.split}.json"
    return None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _crc(data: Tensor) -> int:
    return zlib.crc32(data.contiguous().numpy())


@dataclass
class Pool:
    """Preprocessed uint8 images of one folder: flat pixels, per-image offsets and CHW shapes, and an index."""

    kind: str
    folder: str
    data: Tensor  # uint8, every image's CHW pixels one after another
    offsets: Tensor  # int64 (M + 1,)
    shapes: Tensor  # int64 (M, 3)
    entries: dict[str, tuple[int, int, int, int]]  # relative path -> (index, file size, mtime_ns, crc32)
    split_hashes: dict[str, str]

    @classmethod
    def empty(cls, kind: str, folder: str) -> Pool:
        """A pool with no images."""
        return cls(kind, folder, torch.zeros(0, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64),
                   torch.zeros(0, 3, dtype=torch.int64), {}, {})

    def pixels(self, index: int) -> Tensor:
        """The CHW uint8 image at `index` (a view)."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.data[start:end].view(*self.shapes[index].tolist())

    def payload(self) -> dict[str, Any]:
        """What is saved to disk."""
        return {"version": POOL_VERSION, "kind": self.kind, "folder": self.folder, "data": self.data,
                "offsets": self.offsets, "shapes": self.shapes, "entries": self.entries,
                "split_hashes": self.split_hashes}

    @classmethod
    def from_payload(cls, payload: Any, kind: str, folder: str) -> Pool:
        """Check a loaded payload's structure; raises ValueError when it is not a pool of this kind and folder."""
        if not isinstance(payload, dict) or payload.get("version") != POOL_VERSION:
            raise ValueError("not a pool of this version")
        if payload.get("kind") != kind or payload.get("folder") != folder:
            raise ValueError("a pool of another kind or folder")
        data, offsets, shapes = payload["data"], payload["offsets"], payload["shapes"]
        entries = dict(payload["entries"])
        if data.dtype != torch.uint8 or data.ndim != 1 or offsets.ndim != 1 or shapes.shape != (len(offsets) - 1, 3):
            raise ValueError("tensors of the wrong type or shape")
        if int(offsets[0]) != 0 or int(offsets[-1]) != data.numel() or bool((offsets[1:] - offsets[:-1] !=
                                                                                shapes.prod(dim=1)).any()):
            raise ValueError("offsets do not match the image shapes")
        if any(not 0 <= int(e[0]) < len(shapes) for e in entries.values()):
            raise ValueError("an entry points outside the pool")
        return cls(kind, folder, data, offsets, shapes, {k: tuple(int(x) for x in v) for k, v in entries.items()},
                   dict(payload.get("split_hashes", {})))


def pool_path(cache_dir: str | os.PathLike, benchmark: str, folder: Path, kind: str) -> Path:
    """`<cache dir>/<benchmark>-<folder name>-<hash of its absolute path>/<kind>.pt`."""
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"{benchmark}-{folder.name}-{tag}" / f"{kind}.pt"


def _load_pool(path: Path, kind: str, folder: str) -> Pool:
    if not path.is_file():
        return Pool.empty(kind, folder)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return Pool.from_payload(payload, kind, folder)
    except Exception as err:  # unreadable, truncated or foreign: never trusted, rebuilt
        print(f"cache {path} is unreadable or invalid ({type(err).__name__}: {err}); rebuilding it")
        return Pool.empty(kind, folder)


_warned: set[str] = set()  # cache folders already reported as unwritable in this process


def _warn_unwritable(path: Path, err: OSError) -> None:
    """One warning per cache folder that cannot be written; the run goes on with the images decoded in memory."""
    folder = str(path.parent.parent)
    if folder in _warned:
        return
    _warned.add(folder)
    reason = (err.strerror or type(err).__name__).lower()
    print(f"warning: preprocessed cache {path} cannot be written ({reason}); this run keeps the images it decodes "
          f"in memory and the next run decodes them again (free space, or pass --cache-dir DIR or --no-cache)",
          file=sys.stderr)


def _decode(path: Path, steps: Sequence[Any], decode: str = "pil") -> Tensor:
    image: Any = image_io.read_rgb(path, decode)
    for step in steps:
        image = step(image)
    tensor = to_uint8_tensor(image)
    if tensor.dtype != torch.uint8:  # tf1 resizes give floats in [0, 255]
        tensor = tensor.round().clamp(0, 255).to(torch.uint8)
    return tensor.contiguous()


@dataclass
class CachedSplit:
    """The uint8 images and labels of one split (in the split's order), ready to batch."""

    images: Tensor | None  # (N, 3, H, W) when every image has the same shape
    ragged: list[Tensor] | None  # otherwise one CHW tensor per image
    labels: Tensor
    rebuilt: int  # images decoded for this split (0 when everything came from the cache)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Tensor:
        """One CHW uint8 image."""
        return self.images[index] if self.images is not None else self.ragged[index]

    def to(self, device: torch.device) -> CachedSplit:
        """The same split with its tensors on `device`."""
        images = self.images.to(device) if self.images is not None else None
        ragged = [t.to(device) for t in self.ragged] if self.ragged is not None else None
        return CachedSplit(images, ragged, self.labels.to(device), self.rebuilt)

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data."""
        if self.images is not None:
            return self.images.numel()
        return sum(t.numel() for t in self.ragged)


def load_split(
    dataset: ImageListDataset,
    benchmark: str,
    train: bool,
    image_size: int,
    resize: str | None,
    cache_dir: str | os.PathLike,
) -> CachedSplit:
    """The preprocessed images of a dataset split from its pool, decoding (and saving) only what is missing."""
    resize = resolve_resize(benchmark, resize)
    if benchmark == "vtab1k":
        train = False  # no augmentation: training and evaluation store the same images
    decode = getattr(dataset, "decode", "pil")
    kind = pool_kind(benchmark, train, image_size, resize, decode)
    steps, _ = geometric_steps(benchmark, train, image_size, resize)
    split_file = split_file_of(dataset)
    folder = split_file.parent if split_file is not None else Path(os.path.commonpath([p for p, _ in dataset.samples]))
    folder_key = str(folder.resolve())
    path = pool_path(cache_dir, benchmark, folder, kind)
    keys = [os.path.relpath(p, folder) for p, _ in dataset.samples]
    stamps = [_stamp(p) for p, _ in dataset.samples]
    lock: FileLock | None = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:  # no cache folder here: decode into memory, write nothing
        _warn_unwritable(path, err)
        lock = None
    try:
        pool = _load_pool(path, kind, folder_key) if lock is not None else Pool.empty(kind, folder_key)
        usable: dict[str, int] = {}
        for key, stamp in zip(keys, stamps, strict=True):
            entry = pool.entries.get(key)
            if key in usable or entry is None or (entry[1], entry[2]) != stamp:
                continue
            if _crc(pool.pixels(entry[0])) == entry[3]:
                usable[key] = entry[0]
        missing = list(dict.fromkeys(k for k in keys if k not in usable))
        split_hash = file_sha256(split_file) if split_file is not None else ""
        split_name = getattr(dataset, "split", "samples")
        if missing or pool.split_hashes.get(split_name) != split_hash:
            by_key = dict(zip(keys, (p for p, _ in dataset.samples), strict=True))
            new = {k: _decode(by_key[k], steps, decode) for k in missing}
            pool = _merged(pool, usable, new, {k: s for k, s in zip(keys, stamps, strict=True)})
            pool.split_hashes[split_name] = split_hash
            if lock is not None:
                try:
                    save_torch_atomic(path, pool.payload())  # atomic: the previous pool stays whole on failure
                except OSError as err:
                    _warn_unwritable(path, err)
            usable = {k: pool.entries[k][0] for k in keys}
    finally:
        if lock is not None:
            lock.release()
    pixels = [pool.pixels(usable[k]) for k in keys]
    labels = torch.tensor([label for _, label in dataset.samples], dtype=torch.int64)
    if len({tuple(t.shape) for t in pixels}) == 1:
        return CachedSplit(torch.stack(pixels), None, labels, len(missing))
    return CachedSplit(None, [t.clone() for t in pixels], labels, len(missing))


def _merged(pool: Pool, usable: dict[str, int], new: dict[str, Tensor],
            stamps: dict[str, tuple[int, int]]) -> Pool:
    """A pool holding every still-valid old entry plus the newly decoded images."""
    keep = {k: e for k, e in pool.entries.items() if k not in new and (k in usable or k not in stamps)}
    tensors, entries = [], {}
    for key, entry in keep.items():
        tensors.append(pool.pixels(entry[0]))
        entries[key] = (len(tensors) - 1, entry[1], entry[2], entry[3])
    for key, tensor in new.items():
        tensors.append(tensor)
        entries[key] = (len(tensors) - 1, *stamps[key], _crc(tensor))
    shapes = torch.tensor([list(t.shape) for t in tensors], dtype=torch.int64).reshape(-1, 3)
    sizes = shapes.prod(dim=1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    data = torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0, dtype=torch.uint8)
    return Pool(pool.kind, pool.folder, data, offsets, shapes, entries, dict(pool.split_hashes))


def _fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_SHARE * free


class CachedLoader:
    """Batches of a cached split: normalised float32 images and labels on `device`, in DataLoader order.

    The order comes from a DataLoader over the indices with the same batch size, shuffling and
    generator as the uncached path, so both paths see the same batches. `split` may be a function
    that loads the split: it is called on the first iteration (so a bad image fails where the
    uncached path would, inside the training loop).
    """

    def __init__(
        self,
        split: CachedSplit | Callable[[], CachedSplit],
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        device: torch.device,
        random_steps: Sequence[Any] = (),
        indices: Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ) -> None:
        self.device = device
        self._split: CachedSplit | None = None
        self._load = split if callable(split) else (lambda: split)
        if indices is None:
            indices = range(len(split)) if not callable(split) else range(len(self.split))
        self.indices = torch.as_tensor(list(indices), dtype=torch.int64)
        self.order = DataLoader(range(len(self.indices)), batch_size=batch_size, shuffle=shuffle, generator=generator)
        self.random_steps = list(random_steps)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    @property
    def split(self) -> CachedSplit:
        """The cached split, loaded (and moved to the device when it fits) on first use."""
        if self._split is None:
            split = self._load()
            self._split = split.to(self.device) if _fits_on(self.device, split.nbytes) else split
        return self._split

    def __len__(self) -> int:
        return len(self.order)

    def _pixels(self, chosen: Tensor) -> Tensor:
        if not self.random_steps and self.split.images is not None:
            return self.split.images[chosen.to(self.split.images.device)]
        batch = []
        for index in chosen.tolist():
            image = self.split.image(index)
            for step in self.random_steps:
                image = step(image)
            batch.append(image)
        return torch.stack(batch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for positions in self.order:
            chosen = self.indices[positions]
            pixels = self._pixels(chosen).to(self.device, non_blocking=True)
            images = pixels.to(torch.float32).div_(255).sub_(self.mean).div_(self.std)  # in place: one allocation
            yield images, self.split.labels[chosen.to(self.split.labels.device)].to(self.device)


def cached_loader(
    dataset: Dataset,
    benchmark: str,
    train: bool,
    image_size: int,
    resize: str | None,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device,
    cache_dir: str | os.PathLike,
) -> CachedLoader:
    """A CachedLoader for an ImageListDataset split (or a Subset of one) with a benchmark's preprocessing."""
    if isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, list(dataset.indices)
    else:
        indices = list(range(len(dataset)))
    resize = resolve_resize(benchmark, resize)
    _, random_steps = geometric_steps(benchmark, train, image_size, resize)
    return CachedLoader(lambda: load_split(dataset, benchmark, train, image_size, resize, cache_dir),
                        batch_size, shuffle, generator, device, random_steps, indices)

