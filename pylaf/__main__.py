import sys

from pylaf.cli import main

sys.exit(main())
