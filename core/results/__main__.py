"""`python -m sparse_transfer.results`: the real-results run (see `sparse_transfer.results.run`)."""

import sys

from sparse_transfer.results.run import main

if __name__ == "__main__":  # importing this module (e.g. an import-everything test) runs nothing
    sys.exit(main())
