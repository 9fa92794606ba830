"""
Two dumps (or reports) compared: clusters matched by template, growth per hour,
and their renderings.

Imports the pipeline (to mine a dump) and everything below it.
"""
