"""Datatypes that exist only for tests, loaded with ``DVID_CLOUD_PLUGINS``."""
