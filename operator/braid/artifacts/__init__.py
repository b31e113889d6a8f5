"""Artifacts on the drivers' side: the files a step writes under $BRAID_ARTIFACTS, stored in
an S3-compatible bucket (in a cluster) or a directory (locally), and fetched for the steps that
read them. The engine only ever sees references (engine/artifacts.py).

files.py collects what a step wrote (regular files only, within its limits); store.py is the
store (S3 or a directory) and the deterministic keys; agent.py is what runs inside a step Pod
(an init container that downloads, a native sidecar that uploads when the step has ended).
"""
