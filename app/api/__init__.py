"""HTTP routes of the server itself: server, repo and node endpoints, and the dispatch
of instance endpoints to their datatype."""
