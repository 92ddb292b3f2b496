"""``python -m inmesh`` runs the ``inmesh`` command."""

import sys

from inmesh.cli.main import main

sys.exit(main())
