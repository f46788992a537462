"""synth: placeholder docstring."""
