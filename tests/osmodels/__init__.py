"""Simulated operating systems for tests: models of macOS's and Windows' account tools.

Neither OS runs on the machine that tests jcstate. Each model is a ``jcstate.host.Host`` that
interprets exactly what the backends emit, keeps state, and answers in the documented formats;
anything it does not know raises :class:`ModelError`. A model is not the OS: docs/platforms.md
says which results come from a model and which from a real test host.
"""


class ModelError(AssertionError):
    """The backend emitted something this model does not know: the test must fail."""
