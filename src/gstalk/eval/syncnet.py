"""LSE-C and LSE-D (Wav2Lip's lip-sync metrics) with SyncNet, from weights the user gives by path.

The network is syncnet_python's ``S`` (Chung & Zisserman 2016): an audio stream over 13 MFCCs × 20 steps
(0.2 s) and a video stream over 5 face crops of 224², each ending in a 1024-d embedding. For every video
window the distances to the audio windows shifted by −15…15 frames are averaged over the clip; LSE-D is
the smallest mean distance, LSE-C the median minus that minimum (the confidence).

Weights: ``syncnet_v2.model`` (a state dict), read with ``torch.load(weights_only=True)``. MFCCs come from
``python_speech_features``, the library the metric was defined with. Face crops here come from gstalk's
MediaPipe landmarks rather than the S3FD detector of the original scripts, so values are close to, not
identical with, numbers produced by those scripts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import GstalkError
from ..media.audio import AUDIO_RATE

CROP = 224
VSHIFT = 15


def _conv2(cin, cout, k, stride=1, pad=1):
    return [nn.Conv2d(cin, cout, k, stride, pad), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv3(cin, cout, k, stride=(1, 1, 1), pad=(0, 1, 1)):
    return [nn.Conv3d(cin, cout, k, stride, pad), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    def __init__(self, dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2(1, 64, 3), nn.MaxPool2d(1, 1),
            *_conv2(64, 192, 3), nn.MaxPool2d(3, (1, 2)),
            *_conv2(192, 384, 3), *_conv2(384, 256, 3), *_conv2(256, 256, 3), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 512, (5, 4), 1, 0), nn.BatchNorm2d(512), nn.ReLU(),
        )  # fmt: skip
        self.netfcaud = _head(dim)
        self.netfclip = _head(dim)
        self.netcnnlip = nn.Sequential(
            *_conv3(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3(96, 256, (1, 5, 5), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv3(256, 256, (1, 3, 3)), *_conv3(256, 256, (1, 3, 3)), *_conv3(256, 256, (1, 3, 3)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6), 1, 0), nn.BatchNorm3d(512), nn.ReLU(inplace=True),
        )  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path) -> SyncNet:
        path = Path(path)
        if not path.is_file():
            raise GstalkError(f"no SyncNet weights at {path}", "pass the path of syncnet_v2.model")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise GstalkError(
                f"could not read SyncNet weights {path} ({err})", "pass syncnet_v2.model"
            ) from err
        model = cls()
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise GstalkError(
                f"{path} does not hold SyncNet (syncnet_v2) weights ({err})",
                "pass syncnet_v2.model from syncnet_python",
            ) from err
        return model.eval()

    def audio_embedding(self, mfcc: torch.Tensor) -> torch.Tensor:  # (B, 1, 13, 20)
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def video_embedding(self, frames: torch.Tensor) -> torch.Tensor:  # (B, 3, 5, 224, 224)
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def face_crops(frames: list[np.ndarray], boxes: list[tuple[int, int, int]]) -> np.ndarray:
    """(T, 224, 224, 3) crops of each frame at its (x0, y0, side) box."""
    out = []
    for f, (x0, y0, s) in zip(frames, boxes):
        pad = max(0, -x0, -y0, x0 + s - f.shape[1], y0 + s - f.shape[0])
        g = cv2.copyMakeBorder(f, pad, pad, pad, pad, cv2.BORDER_CONSTANT) if pad else f
        out.append(cv2.resize(g[y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s], (CROP, CROP)))
    return np.stack(out)


@torch.no_grad()
def lse(
    model: SyncNet,
    frames: list[np.ndarray],
    audio: np.ndarray,
    fps: float,
    face_boxes: list[tuple[int, int, int]],
) -> dict[str, float]:
    """LSE-C and LSE-D of a clip (RGB frames, 16 kHz mono audio starting with the first frame)."""
    try:
        from python_speech_features import mfcc
    except ImportError as err:
        raise GstalkError("LSE needs python_speech_features", "pip install -e '.[syncnet]'") from err
    if abs(fps - 25) > 1e-6:
        raise GstalkError(
            f"SyncNet expects 25 fps video, this clip is at {fps:g}", "prepare the clip at 25 fps"
        )
    device = next(model.parameters()).device
    crops = face_crops(frames, face_boxes)[..., ::-1].copy()  # the original scripts feed OpenCV's BGR
    video = torch.from_numpy(crops).float().permute(3, 0, 1, 2)[None].to(device)  # (1, 3, T, H, W)
    coeffs = mfcc(np.asarray(audio, np.float64) * 32768, AUDIO_RATE)  # the scripts read int16 wavs
    cc = torch.from_numpy(coeffs.T.copy()).float()[None, None].to(device)  # (1, 1, 13, T * 4)
    n = min(len(frames) - 4, cc.shape[-1] // 4 - 4)
    if n < 2 * VSHIFT + 1:
        raise GstalkError(
            f"LSE needs at least {2 * VSHIFT + 5} frames, got {len(frames)}", "evaluate more test frames"
        )
    vid = torch.cat([model.video_embedding(video[:, :, i : i + 5]) for i in range(n)])
    aud = torch.cat([model.audio_embedding(cc[:, :, :, 4 * i : 4 * i + 20]) for i in range(n)])
    padded = torch.nn.functional.pad(aud, (0, 0, VSHIFT, VSHIFT))
    dists = torch.stack(
        [
            torch.nn.functional.pairwise_distance(
                vid[i : i + 1].expand(2 * VSHIFT + 1, -1), padded[i : i + 2 * VSHIFT + 1]
            )
            for i in range(n)
        ]
    )
    mean = dists.mean(0)
    minval = float(mean.min())
    return {
        "lse_d": round(minval, 4),
        "lse_c": round(float(mean.median()) - minval, 4),
        "offset_frames": VSHIFT - int(mean.argmin()),
    }
