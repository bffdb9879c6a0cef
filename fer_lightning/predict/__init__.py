"""Predict facial expressions on photos, folders, video files and webcams:

    python -m fer_lightning.predict <image | folder | video | webcam index> ckpt_path=<model>

Faces are found by a detector of ``fer_lightning.faces`` (``detect=false`` takes each image as one
face crop), cropped with a margin, turned gray, resized to 48x48 and classified in batches through
the Python API, with the same preprocessing as training's evaluation. Every face becomes one JSON
line (source, frame, then ``Face.to_dict()``: box, label, probabilities) in ``predictions.jsonl``;
``annotate=true`` also writes annotated images and videos, ``show=true`` a live window with labels
and fps. Modules: ``sources`` (frames in), ``sinks`` (results out), ``task`` (the loop).
"""

from fer_lightning.predict.task import main, predict

__all__ = ["main", "predict"]
