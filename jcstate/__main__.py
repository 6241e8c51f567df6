import sys

from jcstate.cli import main

sys.exit(main())
