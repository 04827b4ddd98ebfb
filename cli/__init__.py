"""The `wasmdeck` command line: a thin client of `engine.Engine`."""
