"""wasmdeck: run other people's WebAssembly Workers safely, locally.

The packages: `wasmdeck.engine` (the embeddable engine; `Engine` is its one public entry
point), `wasmdeck.client` (the engine client interface and its in-process and HTTP
transports), `wasmdeck.cli` (the `wasmdeck` command), `wasmdeck.server` (`wasmdeck serve`),
`wasmdeck.console` (the Textual admin console) and `wasmdeck.demo` (the demo platform).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wasmdeck")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
