"""Ray: pipeline tasks as Ray tasks on a local Ray or a cluster (``modelyard[ray]``).

Ray is imported only when one of these modules is, never by ``modelyard.runtimes``.
"""
