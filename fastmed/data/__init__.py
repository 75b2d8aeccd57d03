"""Readers for the layouts users already have, and synthetic datasets in those layouts."""
