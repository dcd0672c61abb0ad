"""The face: MediaPipe tracking, mesh topology, head pose, and expression measures."""
