"""`python -m astrom3_hpc.cli ...`: the same as the `astrom3` command."""
import sys

from . import main

sys.exit(main())
