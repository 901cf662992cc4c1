import sys

from pgbench.cli import main

sys.exit(main())
