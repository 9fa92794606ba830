"""dumpminer: mine a slab cache in a vmcore for the strings that leaked."""
