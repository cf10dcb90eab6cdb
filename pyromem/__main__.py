import sys

from pyromem.cli import main

sys.exit(main())
