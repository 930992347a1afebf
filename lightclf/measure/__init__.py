"""Measuring networks: cost (params, MACs, size, receptive field) and speed (inference, training)."""
