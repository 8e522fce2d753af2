"""Datatype-agnostic storage machinery: the one conditional-update helper, the on-store
key layout of metadata and keyed records, the format version, transactions and events."""
