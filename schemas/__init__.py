"""JSON Schemas of jcstate documents, shipped with the package and usable by editors."""
