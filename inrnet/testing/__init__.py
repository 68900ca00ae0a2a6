"""Property asserts shared by inrnet's tests and available to users.

* [`assert_matches_discrete`][inrnet.testing.asserts.assert_matches_discrete]: a continuous layer on ``grid(shape)`` points equals its
  discrete twin (paper Property 4).
* [`assert_converges`][inrnet.testing.asserts.assert_converges]: a quantity converges as the number of Sobol points grows
  (paper Property 3).
* [`gradcheck_field`][inrnet.testing.asserts.gradcheck_field]: float64 ``gradcheck`` through a layer's values and parameters.
"""

from inrnet.testing.asserts import (assert_converges, assert_matches_discrete, discrete_positions, gradcheck_field,
                                    grid_field)

__all__ = ["grid_field", "discrete_positions", "assert_matches_discrete", "assert_converges", "gradcheck_field"]
