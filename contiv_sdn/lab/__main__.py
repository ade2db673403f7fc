"""``python -m contiv_sdn.lab``: see :mod:`contiv_sdn.lab.cli`."""

import sys

from contiv_sdn.lab.cli import main

sys.exit(main())
