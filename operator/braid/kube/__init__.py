"""Everything that talks to, or is shaped by, the Kubernetes API: the API client behind a
narrow protocol (``Cluster``) and the pure Pod translation of step attempts."""
