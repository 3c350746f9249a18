"""Registered trainers. Importing this package registers every trainer and its config node."""
from trainers import anchoropt_config, anchoropt_stage1, coop, coop_anchoropt, maple, maple_anchoropt, zsclip  # noqa: F401
