"""wasmdeck console: a Textual admin console over an engine client."""
