import sys

from sparse_transfer.cli import main

sys.exit(main())
