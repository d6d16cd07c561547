"""Object detection: box coders, anchor clustering, post-processing and the detectors
(sliding window, Fast R-CNN, YOLOv1, YOLOv3, SSD); importing this registers the detectors."""

from cnnzoo.models.detection import fast_rcnn, sliding_window, ssd, yolov1, yolov3  # noqa: F401
