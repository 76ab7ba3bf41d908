import sys

from hallucinator.cli import main

sys.exit(main())
