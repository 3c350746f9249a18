"""The built-in, Dassl-compatible core used when the ``dassl`` package is absent (or not wanted)."""
