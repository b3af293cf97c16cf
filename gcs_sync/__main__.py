"""``python -m gcs_sync``: the operator's command line (see ``gcs_sync.cli``)."""

import sys

from .cli import main

sys.exit(main())
