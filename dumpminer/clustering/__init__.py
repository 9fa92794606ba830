"""
Clustering: fragments into templates (numbers, words, fill), and the bounded tally
of a walk that folds members into templates.

Imports only the layers below it.
"""
