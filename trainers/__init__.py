"""Registered trainers. Importing this package registers every trainer and its config node."""
from trainers import anchoropt_config, coop, zsclip  # noqa: F401
