"""decontam: placeholder docstring."""
