"""Face tracking with MediaPipe: 478 landmarks (with irises) per frame, one subject followed through the clip.

By default the face mesh whose models ship inside the mediapipe wheel is used, so tracking runs offline
with nothing to download. Given a ``face_landmarker.task`` bundle, the MediaPipe Tasks landmarker is used
instead and its 52 blendshapes are recorded too.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import GstalkError
from .landmarks import N_LANDMARKS

N_BLENDSHAPES = 52


@dataclass
class FaceObservation:
    landmarks: np.ndarray  # (478, 3) float32: x, y in pixels, z in pixels (MediaPipe's relative depth)
    blendshapes: np.ndarray | None  # (52,) float32 when a landmarker bundle is used
    n_faces: int


@contextlib.contextmanager
def quiet_stderr():
    """MediaPipe's C++ logs to fd 2 (EGL, TFLite delegate banners); keep the user's terminal clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


class FaceTracker:
    """Per-frame landmarks of one subject. Use as a context manager; call :meth:`track` in frame order.

    Each frame, MediaPipe's full-range face detector finds the faces (any resolution, small faces in wide
    shots too); where it finds none, the short-range detector, made for faces that fill the frame (tight
    crops such as VoxCeleb's 224² ones, where the full-range model misses most frames), is asked too. The
    subject is the face nearest the one tracked so far (at the start, the largest). The
    landmarker then runs on a square crop around that face, so the mesh sees the face at a good size
    whatever the frame size, and landmarks are mapped back to frame pixels.
    """

    ROI_SIZE = 256  # pixels of the crop the landmarker sees
    ROI_SCALE = 2.0  # crop side in detector box sides

    def __init__(self, landmarker: str | Path | None = None, fps: float = 25.0) -> None:
        import mediapipe as mp

        self.fps = fps
        self._previous_centre: np.ndarray | None = None
        self._roi: tuple[int, int, int] | None = None  # x0, y0, side of the landmarker's crop
        self._frame = 0
        self.blendshape_names: list[str] | None = None
        with quiet_stderr():
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=0.5
            )
            self._close_detector = mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=0.5
            )
            if landmarker is None:
                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=False,
                    max_num_faces=1,
                    refine_landmarks=True,
                    min_detection_confidence=0.5,
                    min_tracking_confidence=0.5,
                )
                self._tasks = None
            else:
                self._mesh = None
                self._tasks = _tasks_landmarker(Path(landmarker), 1)

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._detector.close()
        self._close_detector.close()
        if self._mesh is not None:
            self._mesh.close()
        if self._tasks is not None:
            self._tasks.close()

    def track(self, rgb: np.ndarray) -> FaceObservation | None:
        """Landmarks of the tracked subject in ``rgb`` (H, W, 3 uint8), or None when no face is found."""
        rgb = np.ascontiguousarray(rgb)
        _h, _w = rgb.shape[:2]
        boxes = self._detect(rgb)
        self._frame += 1
        if not boxes:
            return None
        box = boxes[self._choose(boxes)]
        box_centre = box[:2] + box[2:] / 2
        if self._roi is None or not self._roi_holds(box_centre, max(box[2], box[3])):
            side = self.ROI_SCALE * max(box[2], box[3])
            self._roi = (
                round(box_centre[0] - side / 2),
                round(box_centre[1] - side / 2),
                round(side),
            )
        x0, y0, side_px = self._roi
        found = self._landmarks(_square_crop(rgb, x0, y0, side_px, self.ROI_SIZE))
        if found is None:
            self._roi = None
            return None
        points, blend = found
        scale = side_px / self.ROI_SIZE
        points[:, :2] = points[:, :2] * scale + np.array([x0, y0], np.float32)
        points[:, 2] *= scale
        self._previous_centre = points[:, :2].mean(0)
        return FaceObservation(points[:N_LANDMARKS], blend, len(boxes))

    def _roi_holds(self, centre: np.ndarray, size: float) -> bool:
        """Keep the crop still (so the landmarker's own tracking is not disturbed) while the face stays
        well inside it at a similar size."""
        x0, y0, side = self._roi
        offset = np.abs(centre - np.array([x0 + side / 2, y0 + side / 2])).max()
        return offset < 0.12 * side and 0.8 < self.ROI_SCALE * size / side < 1.25

    def _detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Face boxes (x, y, w, h) in pixels: the full-range detector's, else the short-range one's."""
        h, w = rgb.shape[:2]
        result = self._detector.process(rgb)
        if not result.detections:
            result = self._close_detector.process(rgb)
        boxes = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            boxes.append(np.array([b.xmin * w, b.ymin * h, b.width * w, b.height * h], np.float32))
        return boxes

    def _landmarks(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        n = self.ROI_SIZE
        if self._mesh is not None:
            result = self._mesh.process(crop)
            if not result.multi_face_landmarks:
                return None
            face = result.multi_face_landmarks[0].landmark
            return np.array([(p.x * n, p.y * n, p.z * n) for p in face], dtype=np.float32), None
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=crop)
        result = self._tasks.detect_for_video(image, round(self._frame * 1000 / self.fps))
        if not result.face_landmarks:
            return None
        points = np.array([(p.x * n, p.y * n, p.z * n) for p in result.face_landmarks[0]], dtype=np.float32)
        blend = None
        if result.face_blendshapes:
            shapes = result.face_blendshapes[0]
            blend = np.array([c.score for c in shapes], dtype=np.float32)
            if self.blendshape_names is None:
                self.blendshape_names = [c.category_name for c in shapes]
        return points, blend

    def _choose(self, boxes: list[np.ndarray]) -> int:
        """The face nearest the one tracked so far; at the start, the largest."""
        if len(boxes) == 1:
            return 0
        if self._previous_centre is None:
            return int(np.argmax([b[2] * b[3] for b in boxes]))
        centres = [b[:2] + b[2:] / 2 for b in boxes]
        return int(np.argmin([np.linalg.norm(c - self._previous_centre) for c in centres]))


def _square_crop(rgb: np.ndarray, x0: int, y0: int, side: int, out: int) -> np.ndarray:
    """``side``-square crop at (x0, y0), edge-padded outside the frame, resized to ``out`` pixels."""
    h, w = rgb.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = rgb[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    interp = cv2.INTER_AREA if side > out else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(patch, (out, out), interpolation=interp))


def _tasks_landmarker(path: Path, max_faces: int):
    if not path.is_file():
        raise GstalkError(
            f"no face landmarker bundle at {path}", "pass the path of a face_landmarker.task file"
        )
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path)),
        running_mode=vision.RunningMode.VIDEO,
        num_faces=max_faces,
        output_face_blendshapes=True,
    )
    try:
        return vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError) as err:
        raise GstalkError(
            f"{path} is not a usable MediaPipe face landmarker bundle ({err})",
            "pass the face_landmarker.task file from MediaPipe's model page",
        ) from err


def track_frames(frames, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of one subject through a sequence of RGB uint8 frames (H, W, 3): (T, 478, 3) float32 in
    pixels (zeros where lost) and (T,) bool, the frames where the face was found."""
    landmarks, valid = [], []
    with FaceTracker(None, fps=fps) as tracker:
        for rgb in frames:
            obs = tracker.track(rgb)
            landmarks.append(obs.landmarks if obs is not None else np.zeros((N_LANDMARKS, 3), np.float32))
            valid.append(obs is not None)
    return np.asarray(landmarks, np.float32).reshape(-1, N_LANDMARKS, 3), np.asarray(valid, bool)
