"""Linear attention along the class axis: the plain-torch reference and the dispatch the model calls."""

from .dispatch import class_attention
from .reference import linear_class_attention_reference

__all__ = ["class_attention", "linear_class_attention_reference"]
