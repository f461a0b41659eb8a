"""`python -m pipelines.results`: the real-results run (see `pipelines.results.run`)."""

import sys

from pipelines.results.run import main

if __name__ == "__main__":  # importing this module (e.g. an import-everything test) runs nothing
    sys.exit(main())
