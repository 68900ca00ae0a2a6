"""Property asserts shared by inrnet's tests and available to users.

* :func:`assert_matches_discrete`: a continuous layer on ``grid(shape)`` points equals its
  discrete twin (paper Property 4).
* :func:`assert_converges`: a quantity converges as the number of Sobol points grows
  (paper Property 3).
* :func:`gradcheck_field`: float64 ``gradcheck`` through a layer's values and parameters.
"""

from inrnet.testing.asserts import (assert_converges, assert_matches_discrete, discrete_positions, gradcheck_field,
                                    grid_field)

__all__ = ["grid_field", "discrete_positions", "assert_matches_discrete", "assert_converges", "gradcheck_field"]
