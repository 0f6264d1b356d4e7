"""``python -m experiments.cli``: the ``waddington`` command (as ``ray job submit`` runs it from a working dir)."""

import sys

from experiments.cli.main import main

sys.exit(main())
