"""The embedded miniature DataComp world: a generated pool, reference models, assets and eval suite.

``make_test_world(root)`` builds the small world the tests share; ``make_world(root)`` the demo's
``tiny`` world. See ``docs/synth.md`` for the formats, the noise knobs and the measured figures.
"""

from datacomp.synth.noise import KINDS, NoiseMix
from datacomp.synth.pool import DEFAULT_BASE_URL, make_pool
from datacomp.synth.world import World, make_assets, make_test_world, make_world

__all__ = [
    "DEFAULT_BASE_URL",
    "KINDS",
    "NoiseMix",
    "World",
    "make_assets",
    "make_pool",
    "make_test_world",
    "make_world",
]
