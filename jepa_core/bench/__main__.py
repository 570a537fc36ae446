"""`python -m jepa_core.bench`: the benchmark's command line (the package holds the code)."""
import sys

from jepa_core.bench import main

sys.exit(main())
