"""The livepatch layer: klp names, the livepatch view of a module."""
