"""Registered trainers. Importing this package registers every trainer and its config node."""

from trainers import (  # noqa: F401
    anchoropt_config,
    anchoropt_stage1,
    cocoop,
    cocoop_anchoropt,
    coop,
    coop_anchoropt,
    dept,
    dept_anchoropt,
    maple,
    maple_anchoropt,
    zsclip,
)
