"""autopdm: predictive maintenance for car workshops (brake, tire, 12 V battery)."""

__version__ = "0.1.0"
