"""``python -m cara`` is the ``cara`` command."""

import sys

from cara.cli.main import main

sys.exit(main())
