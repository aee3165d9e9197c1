"""Applications built on the library: the demo, the study, routing analysis and figures. The
library modules (``mofme.nn``, ``mofme.models``, ``mofme.data``, ``mofme.engine``) never import
from here."""
