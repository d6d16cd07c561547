"""The peer benchmark's parts (see ``benchmarks/peers.py``).

``timing`` and the ``*_peer`` scripts run in the peers' own virtual environment as well as in
cnnzoo's, so they import nothing of cnnzoo; the rest runs in cnnzoo's environment only.
"""
