"""Face mode for photos in the wild and videos: find faces (OpenCV Haar cascade shipped in
opencv-python-headless 4.x), crop them with the training data's framing, score each; the most suspicious
face decides. See docs/faces.md. OpenCV is imported lazily; without it the functions raise FacesUnavailable.
"""

from dfdetect.faces.align import BOX_CENTER_DY, BOX_FRACTION, TRAIN_CROP, crop_box, crop_face
from dfdetect.faces.detect import Face, FacesUnavailable, find_faces
from dfdetect.faces.predict import (
    FacePrediction,
    FaceResult,
    FaceScore,
    auto_face_mode,
    face_prediction,
    jpeg_quality,
    predict_faces,
    predict_paths,
)
from dfdetect.faces.video import VideoResult, analyze_video

__all__ = [
    "BOX_CENTER_DY",
    "BOX_FRACTION",
    "TRAIN_CROP",
    "Face",
    "FacePrediction",
    "FaceResult",
    "FaceScore",
    "FacesUnavailable",
    "VideoResult",
    "analyze_video",
    "auto_face_mode",
    "crop_box",
    "crop_face",
    "face_prediction",
    "find_faces",
    "jpeg_quality",
    "predict_faces",
    "predict_paths",
]
