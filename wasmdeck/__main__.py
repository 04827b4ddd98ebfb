"""`python -m wasmdeck ...`: the same as the `wasmdeck` command."""

import sys

from wasmdeck.cli.main import main

sys.exit(main())
