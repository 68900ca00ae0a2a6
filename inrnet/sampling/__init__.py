"""Point sets on ``[-1, 1]^d``: scrambled Sobol (default), Halton, grid, shrunk, Monte Carlo.

See [`inrnet.sampling.points`][inrnet.sampling.points] for the grid convention every part of inrnet shares.
"""

from inrnet.sampling.points import grid, grid_axes, halton, shrunk, sobol, uniform
from inrnet.sampling.sampler import SCHEMES, MixedSampler, Sampler

__all__ = ["sobol", "halton", "grid", "grid_axes", "shrunk", "uniform", "Sampler", "MixedSampler", "SCHEMES"]
