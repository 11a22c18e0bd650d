"""Training-free open-vocabulary segmentation (CLIP as RNN): Grad-CAM mask proposals from CLIP, a
mask classifier on visually prompted views, repeated until the label set is stable.

`rle` (COCO run-length encoding), `refine` (the guided filter) and `prompts` (visual prompts from a
mask) are light; `gradcam` and `recurrence` import torch when first used by the service.
"""
