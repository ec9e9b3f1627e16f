"""The mlgate benchmark: the real server against a trivial app on the same stack.

Run ``python -m bench`` from the repository root (``--help`` for the options). It starts
``mlgate serve`` (the same gunicorn configuration, default policies, no cluster, a temporary
state folder; ``policies/`` and ``mutators/`` compiled as in the image, where the machine can
build them) and a baseline falcon app on the same gunicorn/TLS setup, drives both with the
same captured AdmissionReview bodies, and prints throughput, latency percentiles and the ratio
mlgate/baseline measured in the same run, then the cost of each stage of a request in process,
latency against the number of loaded policies, and the memory of each worker.
"""
