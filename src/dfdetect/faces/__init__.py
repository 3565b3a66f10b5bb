"""Face mode's image operations for photos in the wild: find faces (OpenCV Haar cascade shipped in
opencv-python-headless 4.x), level them by the eyes, crop them with the training data's framing, draw boxes.
Scoring the crops is the predict pipeline's job (``dfdetect.runtime.pipeline``). See docs/faces.md. OpenCV is
imported lazily; without it the functions raise FacesUnavailable.
"""

from dfdetect.faces.align import (
    ALIGN_MIN_DEG,
    BOX_CENTER_DY,
    BOX_FRACTION,
    TRAIN_CROP,
    align_face,
    crop_box,
    crop_face,
    eye_roll,
)
from dfdetect.faces.detect import Face, FacesUnavailable, faces_available, find_faces
from dfdetect.faces.draw import draw_faces
from dfdetect.faces.predict import (
    FaceCrop,
    FaceResult,
    FaceScore,
    auto_face_mode,
    face_crops,
    jpeg_quality,
)

__all__ = [
    "ALIGN_MIN_DEG",
    "BOX_CENTER_DY",
    "BOX_FRACTION",
    "TRAIN_CROP",
    "Face",
    "FaceCrop",
    "FaceResult",
    "FaceScore",
    "FacesUnavailable",
    "align_face",
    "auto_face_mode",
    "crop_box",
    "crop_face",
    "draw_faces",
    "eye_roll",
    "face_crops",
    "faces_available",
    "find_faces",
    "jpeg_quality",
]
