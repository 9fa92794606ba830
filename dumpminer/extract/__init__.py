"""
Extraction: printable fragments found in object bytes, kernel pointers blanked,
and the batches of objects that analyses observe.

Imports only the layers below it (dump, slub).
"""
