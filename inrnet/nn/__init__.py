"""Continuous INR-Net layers (paper App. C): each a module ``Field -> Field`` (heads: ``Field -> Tensor``)."""
