"""recall: placeholder docstring."""
