"""`python -m reid_stream.eval.synth`: the same command line as `reid-stream synth`."""

import sys

from reid_stream.eval.synth.cli import main

sys.exit(main())
