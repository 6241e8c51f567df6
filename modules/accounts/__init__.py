"""Linux account files, shared by the ``users`` and ``groups`` resources.

Not a resource itself (the registry does not list it): ``files`` parses ``/etc/passwd``,
``/etc/shadow``, ``/etc/group``, ``/etc/gshadow`` and the defaults files; ``facts`` reads them once
through a :class:`~jcstate.host.Host`; ``shadow`` builds shadow-utils command lines; ``lockout``
decides whether a plan would leave the system without an administrator.
"""
