"""AnchorOPT: dynamic anchor-based prompt learning for CLIP, as a Dassl-style plugin."""

__version__ = "0.1.0"
