"""
The compiled parts of dumpminer: dumpminer/extract/_runs.c (finding and grouping
printable runs with the GIL released), dumpminer/analysis/_words.c (string-less
objects and their shapes) and dumpminer/dump/_kdump.c (reading kdump-compressed
pages with the GIL released); everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall"]

setup(
    ext_modules=[
        Extension("dumpminer.extract._runs", ["dumpminer/extract/_runs.c"],
                  extra_compile_args=FLAGS),
        Extension("dumpminer.analysis._words", ["dumpminer/analysis/_words.c"],
                  extra_compile_args=FLAGS),
        Extension("dumpminer.dump._kdump", ["dumpminer/dump/_kdump.c"], extra_compile_args=FLAGS,
                  libraries=["z", "dl"]),
    ]
)
