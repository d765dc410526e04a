"""stitchlab: do two networks speak the same language inside?"""

__version__ = "0.1.0"
