"""Resource modules: one folder per resource, one backend per OS."""
