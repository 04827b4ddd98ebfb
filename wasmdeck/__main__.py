"""`python -m wasmdeck ...`: the same as the `wasmdeck` command."""

from wasmdeck.cli.main import entry

entry()
