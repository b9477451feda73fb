"""Transformations, one concern per module; each imports only from `gradxform.core`."""
