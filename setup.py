"""
The compiled parts of dumpminer: dumpminer/_runs.c (finding and grouping
printable runs with the GIL released), dumpminer/_words.c (string-less
objects and their shapes) and dumpminer/_kdump.c (reading kdump-compressed
pages with the GIL released); everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("dumpminer._runs", ["dumpminer/_runs.c"], extra_compile_args=["-O2", "-Wall"]),
        Extension("dumpminer._words", ["dumpminer/_words.c"], extra_compile_args=["-O2", "-Wall"]),
        Extension(
            "dumpminer._kdump",
            ["dumpminer/_kdump.c"],
            extra_compile_args=["-O2", "-Wall"],
            libraries=["z", "dl"],
        ),
    ]
)
