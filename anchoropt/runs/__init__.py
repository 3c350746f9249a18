"""What a run is: its fingerprint, its recorded identity, and whether an output directory already holds it."""
