"""dfbook: the helper package of the deepfake-detection reproducibility book.

Nothing happens at import time. Import the submodule you need, e.g. ``from dfbook import metrics``.
"""

__version__ = "0.1.0"
