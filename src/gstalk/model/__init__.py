"""Gaussians and the networks that move and colour them; checkpoints that store them."""
