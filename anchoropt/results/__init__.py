"""Machine-readable results of runs, and the tables built from them."""
