"""Push and pull: copying a version and its ancestry between dvid-cloud stores or servers.

Git's model on object stores. A version node's objects all carry its UUID as one whole
key segment (docs/format.md, "Push and pull"), so what a node holds is found by listing,
without knowing any datatype. A transfer copies the objects of the nodes the destination
lacks (skipping those already there with the same size, which makes a rerun resume), then
merges the few objects shared by every version (repo-wide counters) by the owning
datatype's rule, and publishes the nodes into the destination's DAG last, by one
conditional update: a killed transfer leaves only inert objects behind.

Modules: :mod:`.layout` (which node an object belongs to), :mod:`.sides` (a store or a
remote server as either end), :mod:`.engine` (what to send, in what order, progress),
:mod:`.flatten` (one version with its ancestry collapsed), :mod:`.publish` (the
destination's DAG and counters), :mod:`.cli` (the ``push`` and ``pull`` commands).
"""
