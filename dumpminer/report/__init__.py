"""
The report: its typed model (model), one module per output format, and writing it
(output). Renderers read the model only; nothing here reads the dump.

Imports only the layers below it.
"""
