import sys

from cmcr.cli import main

sys.exit(main())
