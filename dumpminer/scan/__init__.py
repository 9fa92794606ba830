"""
The pass over slab pages: batches, counting threads, worker processes, and the probe
for pointer noise before it. It feeds the tally of :mod:`dumpminer.clustering`.

Imports only the layers below it.
"""
