"""inrnet: deep learning directly on datasets of implicit neural representations."""

from inrnet import sampling
from inrnet.field import Field, Lattice, PointSet, check_field, check_same_points
from inrnet.neighbors import Neighbors, Support
from inrnet.inr import INRBatch, PixelINR, sample

__version__ = "0.1.0"
__all__ = ["sampling", "Field", "Lattice", "PointSet", "check_field", "check_same_points", "Neighbors", "Support",
           "INRBatch", "PixelINR", "sample"]
