"""
Analyses of what objects hold beyond their strings: what their words point at,
string-less objects by shape, allocation call sites from SLUB's tracks, stack depot.

Imports only the layers below it.
"""
