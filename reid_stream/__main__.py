import sys

from reid_stream.cli import main

sys.exit(main())
