"""The original Selfee input path, rebuilt as the baseline of ``bench/pipeline.py`` (never used for training).

Frames are first extracted to a folder of JPEGs; each sample reads three JPEGs as grey (t-k, t,
t+k), stacks them, and runs a per-sample PIL augmentation chain (random resized crop, rotation,
flips, the Turbo colormap applied by a Python loop over pixels, colour jitter) twice, in
``DataLoader`` worker processes, as the original training script did.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from selfee.config import AugmentConfig
from selfee.live_frames import neighbor_index
from selfee.turbo import turbo_table


def extract_jpegs(video: Path, folder: Path, quality: int = 95) -> int:
    """Write every frame of ``video`` as ``folder/%06d.jpg`` (the original's offline step); returns the count."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(video)) as c:
        for n, frame in enumerate(c.decode(video=0), start=1):
            frame.to_image().save(folder / f"{n - 1:06d}.jpg", quality=quality)
    return n


class TurboLoop:
    """The Turbo colormap by a Python loop over pixels (how the original applied its table)."""

    def __init__(self, p: float):
        self.p = p
        self.table = [tuple(row) for row in turbo_table().tolist()]

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        px = img.load()
        w, h = img.size
        for y in range(h):
            for x in range(w):
                r, g, b = px[x, y]
                px[x, y] = (self.table[r][0], self.table[g][1], self.table[b][2])
        return img


class OriginalWayDataset(torch.utils.data.Dataset):
    """Two views of the live frame of every frame index in a JPEG folder."""

    def __init__(self, folder: Path, n_frames: int, k: int, out_hw, cfg: AugmentConfig = AugmentConfig()):
        self.folder = Path(folder)
        self.n = n_frames
        self.k = k
        lo, hi = cfg.crop_scale
        self.view = T.Compose([
            T.RandomResizedCrop(tuple(out_hw), scale=(lo * lo, hi * hi)),
            T.RandomRotation(cfg.rotation_deg),
            T.RandomHorizontalFlip(cfg.hflip_p),
            T.RandomVerticalFlip(cfg.vflip_p),
            TurboLoop(cfg.turbo_p),
            T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
            T.ToTensor(),
        ])

    def __len__(self):
        return self.n

    def _grey(self, i: int) -> np.ndarray:
        return np.asarray(Image.open(self.folder / f"{i:06d}.jpg").convert("L"))

    def __getitem__(self, t: int):
        past, cur, fut = neighbor_index(t, self.k, self.n)
        img = Image.fromarray(np.stack([self._grey(past), self._grey(cur), self._grey(fut)], axis=-1))
        return self.view(img.copy()), self.view(img.copy())


def original_loader(folder: Path, n_frames: int, k: int, out_hw, batch_size: int, workers: int = 2):
    """Endless batches (epoch after epoch) of the original-way dataset, shuffled, in worker processes."""
    ds = OriginalWayDataset(folder, n_frames, k, out_hw)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True)
    while True:
        yield from loader
