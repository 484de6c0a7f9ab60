"""``python -m benchmarks.compare``: run the missing runs of a plan, then write its report."""

import sys

from benchmarks.compare.cli import main

if __name__ == "__main__":
    sys.exit(main())
