"""Applications built on the library: the demo, the study, routing analysis and figures. The
library (``mofme.nn``, ``mofme.models``, ``mofme.data``) and the jobs (``mofme.train``,
``mofme.evaluate``, ``mofme.infer``) never import from here."""
