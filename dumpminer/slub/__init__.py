"""
The SLUB allocator: cache names and counts, the slab walk over the page array,
freelists, sampling of slabs, what a dump cut short still reaches, and the caches listing.

Imports only :mod:`dumpminer.dump` below it.
"""
