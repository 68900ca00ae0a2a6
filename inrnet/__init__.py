"""inrnet: deep learning directly on datasets of implicit neural representations."""

from inrnet.field import Field, Lattice, PointSet
from inrnet.neighbors import Neighbors, Support, neighbors

__version__ = "0.1.0"
__all__ = ["Field", "Lattice", "PointSet", "Neighbors", "Support", "neighbors"]
