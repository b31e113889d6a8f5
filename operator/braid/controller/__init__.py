"""The kopf shell: thin handlers that all call one ``Reconciler.reconcile(run)``.

Decides nothing itself; the engine decides and ``braid.kube`` talks to the API server.
"""
