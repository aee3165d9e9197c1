"""Deprecated: moved to :mod:`mofme.studies.downstream` (``mofme study downstream``)."""

import sys

from mofme._deprecated import alias_module

if __name__ == "__main__":  # python -m mofme.apps.downstream: still runs, with the warning
    import warnings

    warnings.warn("mofme.apps.downstream moved to mofme.studies.downstream", FutureWarning, stacklevel=1)
    from mofme.studies.downstream import main

    sys.exit(main())
alias_module(__name__, "mofme.studies.downstream")
