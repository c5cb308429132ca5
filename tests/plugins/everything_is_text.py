"""A text-detector plug-in for the tests: it reports the whole image as text."""

import numpy as np

from datacomp.filters.methods.textspot import register_text_detector


@register_text_detector("everything")
def everything(images: np.ndarray) -> np.ndarray:
    return np.ones(images.shape[:3], bool)
