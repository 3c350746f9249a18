"""Parity with the official AnchorOPT code: a recorder of golden values and the Gumbel-noise replay both sides use."""
