"""Local stand-ins for remote services, built from their public wire formats."""
