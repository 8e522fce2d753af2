"""dvid-cloud: DVID's versioned, image-oriented REST API on object stores."""

__version__ = "0.1.0"
