"""The core layer: the transformation type, combinators, tree and numerics helpers.

Nothing here imports from the rest of the package.
"""
