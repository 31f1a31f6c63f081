"""Stage 5, scenes: hard cuts found by PySceneDetect's ContentDetector on the frames already decoded.

The detector runs with a minimum scene length of one frame: every cut is reported, including both
edges of a flash. Samples only join frames of one scene, so a flash becomes a scene too short to use,
which is what we want. The motion filter then confirms each cut (a fast pan can fool a colour
detector; it cannot fool a flow-warp check).
"""
import cv2
import numpy as np
from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode


class SceneCutter:
    """Feed frames in order; `is_cut` says whether a frame starts a new scene."""

    def __init__(self, fps: float, threshold: float = 27.0):
        self.fps = fps
        self.detector = ContentDetector(threshold=threshold, min_scene_len=1)

    def is_cut(self, frame_index: int, frame_rgb: np.ndarray) -> bool:
        bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)  # PySceneDetect reads OpenCV's channel order
        cuts = self.detector.process_frame(FrameTimecode(frame_index, fps=self.fps), bgr)
        return any(cut.frame_num == frame_index for cut in cuts)
