"""Applications built on the library: the demo, the web page (``serve``) and figures (``plots``).
The library (``mofme.nn``, ``mofme.models``, ``mofme.data``) and the jobs (``mofme.train``,
``mofme.evaluate``, ``mofme.infer``) never import from here. Research (the study, routing analysis,
the downstream comparison) lives in :mod:`mofme.studies`."""
