"""Policy documents: load → validate (schema, rules) → select → render → merge.

Public API::

    repo = load_repo(["policies/"])          # raises DocumentError listing every problem
    repo, problems = validate_paths(paths)   # never raises for document problems
    document = repo.document_for(Device(hostname="eng-1", os="linux"), facts={})
    document.to_dict()                       # plain data for the agent, never templates

The steps live in one module each: ``loader`` (safe YAML with positions), ``schema`` (JSON
Schema in schemas/), ``rules`` (semantic rules), ``names`` (per-OS name rules), ``render``
(sandboxed Jinja2), ``merge`` (several policies into one document), ``model`` (the data) and
``repo`` (the pipeline). docs/documents.md is the user's reference.
"""

from jcstate.document.model import Device, Document, Policy, Selector
from jcstate.document.repo import Repo, load_repo, validate_paths
from jcstate.errors import DocumentError, Problem

__all__ = [
    "Device",
    "Document",
    "DocumentError",
    "Policy",
    "Problem",
    "Repo",
    "Selector",
    "load_repo",
    "validate_paths",
]
