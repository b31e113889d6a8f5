"""The operator: a service (service.py) of watches that feed one runtime, which calls one
``Reconciler.reconcile(run)`` per run; run standalone (standalone.py) or as a hot standby on
kopf (handlers.py).

Decides nothing itself; the engine decides and ``braid.kube`` talks to the API server.
"""
