"""scalelab: the three scaling laws of AI (pretraining, post-training, test-time), measured in FLOPs.

Importing the package is cheap: heavy libraries (torch, transformers) load only in the modules
that train or sample.
"""
__version__ = "0.1.0"
