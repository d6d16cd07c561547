"""Task families: one object per family (classification, segmentation, detection,
generative) answers what the workflows ask — how to train, evaluate and use its runs.
``family_for(task)`` is the door; see :mod:`cnnzoo.families.base`."""

from cnnzoo.families.registry import family_for, register_family

__all__ = ["family_for", "register_family"]
