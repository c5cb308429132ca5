"""``python -m datacomp.train ...`` (e.g. under ``torchrun``): the same as ``datacomp train ...``."""

import sys

from datacomp.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
