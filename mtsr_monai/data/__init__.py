"""Datasets, datalists, the MNI template and the embedded demo subject."""
