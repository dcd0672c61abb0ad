"""The detail measures of ``benchmarks/detail.py`` (``gstalk.bench.detail``) on analytic images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gstalk.bench.detail import band, clip_box, detail_ratios, laplacian, luminance


def _texture(seed: int = 0, size: int = 96) -> np.ndarray:
    """An 8-bit RGB image with detail at every scale (smoothed noise of several widths)."""
    rng = np.random.default_rng(seed)
    layers = [
        cv2.GaussianBlur(rng.random((size, size, 3), np.float32), (0, 0), s) * (1 + s) for s in (0.7, 2, 6)
    ]
    image = sum(layers)
    image = (image - image.min()) / (image.max() - image.min())
    return (image * 255).round().astype(np.uint8)


def test_a_frame_against_itself_has_every_ratio_at_one_and_no_error():
    image = _texture()
    box = clip_box((10, 20, 60), *image.shape[:2])
    ratios = detail_ratios(image, image, box)
    assert ratios["hf_ratio"] == pytest.approx(1.0) and ratios["band_ratio"] == pytest.approx(1.0)
    assert ratios["hf_error"] == 0.0


def test_blur_lowers_the_ratios_and_noise_raises_the_error():
    real = _texture(1)
    box = clip_box((8, 8, 80), *real.shape[:2])
    soft = cv2.GaussianBlur(real, (0, 0), 1.2)
    blurred = detail_ratios(soft, real, box)
    assert blurred["hf_ratio"] < 0.5 and blurred["band_ratio"] < 0.9 and blurred["hf_error"] > 0.3
    noisy = np.clip(real.astype(int) + np.random.default_rng(2).integers(-20, 21, real.shape), 0, 255)
    speckled = detail_ratios(noisy.astype(np.uint8), real, box)
    assert speckled["hf_ratio"] > 1.0 and speckled["hf_error"] > 0.1


def test_the_filters_are_a_laplacian_and_a_difference_of_gaussians():
    grey = luminance(_texture(3))
    assert grey.dtype == np.float32 and grey.min() >= 0 and grey.max() <= 1
    ramp = np.add.outer(np.arange(40.0), 2 * np.arange(50.0)).astype(np.float32)
    assert np.abs(laplacian(ramp)[1:-1, 1:-1]).max() < 1e-4  # no detail in a linear ramp
    assert np.abs(band(np.full((40, 50), 0.3, np.float32))).max() < 1e-6
    rows, cols = clip_box((-5, 30, 20), 40, 50)
    assert (rows, cols) == (slice(30, 40), slice(0, 15))
