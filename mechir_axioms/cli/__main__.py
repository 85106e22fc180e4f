"""`python -m mechir_axioms.cli`: the `mechir-axioms` command."""

import sys

from . import main

sys.exit(main())
