"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, loaded from files the user gives by path.

Nothing is downloaded. The folder holds:

- ``alexnet.pth``: torchvision's AlexNet ImageNet weights (``alexnet-owt-7be5be79.pth``, renamed or linked);
  only its ``features.*`` tensors are used.
- ``alex.pth``: the LPIPS linear-layer weights (``lpips/weights/v0.1/alex.pth`` of the lpips package).

Both are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import GstalkError

CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)  # the ReLU after each conv


def alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )  # fmt: skip


class LPIPS(nn.Module):
    """Perceptual distance between (H, W, 3) or (B, H, W, 3) images in [0, 1]; lower is more similar."""

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_folder(cls, folder: str | Path) -> LPIPS:
        folder = Path(folder)
        backbone, lin = folder / "alexnet.pth", folder / "alex.pth"
        for path in (backbone, lin):
            if not path.is_file():
                raise GstalkError(
                    f"LPIPS weights missing: {path}",
                    "put torchvision's AlexNet weights as alexnet.pth and the lpips package's "
                    "v0.1/alex.pth in that folder",
                )
        model = cls()
        try:
            alex = torch.load(backbone, map_location="cpu", weights_only=True)
            lins = torch.load(lin, map_location="cpu", weights_only=True)
        except Exception as err:
            raise GstalkError(
                f"could not read the LPIPS weights in {folder} ({err})", "check the files"
            ) from err
        feats = {k[len("features.") :]: v for k, v in alex.items() if k.startswith("features.")}
        lin_state = {f"{i}.weight": lins[f"lin{i}.model.1.weight"] for i in range(len(CHANNELS))}
        try:
            model.features.load_state_dict(feats)
            model.lins.load_state_dict(lin_state)
        except (RuntimeError, KeyError) as err:
            raise GstalkError(
                f"the LPIPS weights in {folder} do not fit AlexNet-LPIPS ({err})",
                "use torchvision's alexnet weights and lpips v0.1 alex.pth",
            ) from err
        return model

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.ndim == 3:
            a, b = a[None], b[None]
        x = (a.permute(0, 3, 1, 2) * 2 - 1 - self.shift) / self.scale
        y = (b.permute(0, 3, 1, 2) * 2 - 1 - self.shift) / self.scale
        total = 0.0
        tap = 0
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in TAPS:
                nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + self.lins[tap]((nx - ny) ** 2).mean((2, 3))
                tap += 1
        return total.mean()
