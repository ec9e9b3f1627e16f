"""``mlgate policy test``: run manifests through the admission pipeline offline.

- ``manifests``: read Kubernetes manifests the way ``kubectl apply -f`` does.
- ``cluster``: a local ``ClusterLookups`` made from namespace labels and ResourceQuota files.
- ``runner``: wrap each object in the AdmissionReview the API server would send, and run it
  through ``webhook.admission.Admitter`` (mutate, then validate the mutated object).
- ``report``: text, patch, YAML and JSON output.
- ``suite``: test suites (expected verdicts, messages and mutated objects per object).
- ``command``: the ``mlgate policy test`` command.
"""
