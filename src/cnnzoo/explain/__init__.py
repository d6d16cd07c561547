"""Looking inside a network: what its feature maps see and respond to.

Each module stands alone and is imported where it is used (e.g.
:mod:`cnnzoo.explain.receptive` for receptive fields), so importing this package is cheap.
"""
