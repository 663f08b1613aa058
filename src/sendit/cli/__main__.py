"""`python -m sendit.cli`: the `sendit` command."""

import sys

from sendit.cli import main

sys.exit(main())
