"""``python -m gcs_sync``: the operator's command line (see ``gcs_sync.cli``)."""

import sys

from gcs_sync.cli import main

sys.exit(main())
