"""Kubernetes: every workload rendered to plain Kubernetes objects (dicts), applied with
server-side apply and watched, their states mapped back to modelyard's.

Rendering needs nothing but PyYAML; applying and watching import the official
``kubernetes`` client (``modelyard[k8s]``) when used.
"""
