"""jcstate: declarative device management kept as YAML in git.

The path of a document: load → validate → render → merge → facts → plan → apply → report.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
