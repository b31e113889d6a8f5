"""Braid: agentic workflows as Kubernetes resources.

The package is layered; arrows point one way and import-linter enforces them:
``cli -> local -> engine -> expressions -> api``.
"""

__version__ = "0.1.0"
