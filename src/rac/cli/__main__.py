"""``python -m rac.cli``: the same as the ``rac`` console script."""

import sys

from rac.cli import main

sys.exit(main())
