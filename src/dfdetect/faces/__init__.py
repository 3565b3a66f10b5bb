"""Face mode for photos in the wild and videos: find faces (OpenCV Haar cascade shipped in
opencv-python-headless 4.x), crop them with the training data's framing, score each; the most suspicious
face decides. See docs/faces.md. OpenCV is imported lazily; without it the functions raise FacesUnavailable.
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
from dfdetect.faces.detect import Face, FacesUnavailable, find_faces
from dfdetect.faces.draw import draw_faces
from dfdetect.faces.predict import (
    DECISION_RULE,
    FaceCrop,
    FacePrediction,
    FaceResult,
    FaceScore,
    auto_face_mode,
    face_crops,
    face_prediction,
    face_result,
    jpeg_quality,
    predict_faces,
    predict_paths,
    use_face_mode,
)
from dfdetect.faces.video import VideoResult, analyze_video

__all__ = [
    "ALIGN_MIN_DEG",
    "BOX_CENTER_DY",
    "DECISION_RULE",
    "FaceCrop",
    "align_face",
    "draw_faces",
    "eye_roll",
    "face_crops",
    "face_result",
    "use_face_mode",
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
