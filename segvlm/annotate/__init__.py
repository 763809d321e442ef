"""``segvlm annotate``: semi-automated video annotation in the browser, on top of the correction session.

See :mod:`segvlm.annotate.server` (the API and page), :mod:`segvlm.annotate.project` (media and folders),
:mod:`segvlm.annotate.jobs` (propagation and auto-label in the background) and :mod:`segvlm.annotate.drift`
(where masks probably drifted).
"""
