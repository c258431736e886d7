import sys

from arcod.cli.main import main

sys.exit(main())
