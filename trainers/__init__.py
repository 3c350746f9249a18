"""Registered trainers. Importing this package registers every trainer and its config node."""
