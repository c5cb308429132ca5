"""A user plug-in in one file: a signal reading image pixels from the pool's shards, and a filter on it.

    datacomp filter --plugin tests/plugins/brightness.py --name bright --metadata-dir M --output s.npy
    datacomp filter --plugin tests/plugins/brightness.py --where "brightness > 90 AND text_words > 2" ...

The signal is computed once per metadata file, batched, inside the filter's tasks, and cached under
``<signals-dir>/brightness/``; ``--where`` can read it like any built-in column.
"""

from __future__ import annotations

import numpy as np

from datacomp.filters import register_filter, register_signal

BRIGHT = 130.0  # mean pixel value (0-255) the ``bright`` filter keeps


@register_signal("brightness", {"brightness": "float32"}, images=True, version="1",
                 description="mean pixel value (0-255) of the image, NaN where the pool has no image")
def brightness(x):
    out = np.full(x.num_rows, np.nan, np.float32)
    for pos, images in x.iter_images(batch_size=128):
        for i, img in zip(pos, images):
            if img is not None:
                out[i] = img.mean(dtype=np.float64)
    return {"brightness": out}


@register_filter("bright", needs=("brightness",), description=f"images with mean pixel value >= {BRIGHT:g}")
def bright(t, params):
    with np.errstate(invalid="ignore"):
        return {f"brightness>={BRIGHT:g}": t["brightness"].to_numpy(zero_copy_only=False) >= BRIGHT}
