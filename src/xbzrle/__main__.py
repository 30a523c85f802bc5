"""``python -m xbzrle`` is the ``xbzrle`` command."""

import sys

from .cli import main

sys.exit(main())
