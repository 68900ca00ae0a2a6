"""Property asserts shared by inrnet's tests and available to users."""
