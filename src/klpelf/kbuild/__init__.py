"""From a source fix to the two builds of each unit it touches (``klpelf build``).

:mod:`~klpelf.kbuild.fix` reads the unified diff and applies it to copies of the
touched files; :mod:`~klpelf.kbuild.compile` compiles the original and the fixed
unit with the tree's own kbuild command line.
"""
