"""`python -m pgolf` == the `pgolf` console script."""

import sys

from pgolf.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
