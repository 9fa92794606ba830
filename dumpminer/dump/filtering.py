"""
What makedumpfile's filtering took out of a dump, where it decides whether the
dump can be mined at all.

A makedumpfile older than the kernel it filters can mistake slab pages for
user pages; :func:`check_slab_pages_kept` turns that into one clear error when
the dump is opened, instead of faults on every cache later.
"""

from __future__ import annotations

from drgn import FaultError, Program, sizeof

from dumpminer.dump.info import DumpInfo
from dumpminer.dump.kernel import kernel_version
from dumpminer.errors import SlabPagesFilteredError, show_path

__all__ = ["DL_EXCLUDE_USER_DATA", "check_slab_pages_kept"]

#: makedumpfile's dump level bit for user pages (``-d 8``).
DL_EXCLUDE_USER_DATA = 8


def check_slab_pages_kept(prog: Program, info: DumpInfo) -> None:
    """
    Refuse a dump whose slab pages makedumpfile filtered out.

    Since Linux kernel commit 46df8e73a4a3 ("mm: free up PG_slab") (in
    v6.10), a slab page is marked by a page type in ``_mapcount``, not by
    ``PG_slab``. A makedumpfile that predates it (Debian 12's 1.7.2)
    takes slab pages for user pages, so its "user pages" bit (8, part of
    the usual ``-d 31``) drops many of them: each read of a ``struct
    kmem_cache`` in them then faults on an excluded page. Seen on such a
    dump (the dump level from the kdump header, the kernel version, and a
    fault on a cache), this says what happened and what helps. On the 6.12
    sample at ``-d 31``, 35 of 187 caches were lost so.

    :raises SlabPagesFilteredError: when the dump lost its slab pages so.
    """
    level = info.dump_level
    if level is None or not level & DL_EXCLUDE_USER_DATA:
        return
    if kernel_version(info.osrelease) < (6, 10):
        return
    from drgn.helpers.linux.slab import for_each_slab_cache

    try:
        for cache in for_each_slab_cache(prog):
            prog.read(cache.value_(), sizeof(cache.type_.type))
            cache.name.string_()
    except FaultError as e:
        if "xcluded page" not in str(e):
            return  # another kind of missing memory: counted where it is met
        raise SlabPagesFilteredError(
            f"{show_path(info.path)} lost slab pages: makedumpfile -d {level} drops them on "
            f"kernel {info.osrelease} (6.10 or later) when it predates the slab page type "
            "(its user-page bit 8 takes them for user pages); use the unfiltered dump, "
            f"-d {level & ~DL_EXCLUDE_USER_DATA}, or a makedumpfile that supports this kernel "
            "(1.7.7 or newer for 6.12)"
        ) from e
