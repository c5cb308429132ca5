import sys

from datacomp.cli import main

sys.exit(main())
