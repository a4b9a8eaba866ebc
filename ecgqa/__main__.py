"""``python -m ecgqa`` runs the command line."""

import sys

from ecgqa.cli import main

sys.exit(main())
