"""Protobuf messages of DVID wire formats (generated *_pb2 modules; see Makefile)."""
