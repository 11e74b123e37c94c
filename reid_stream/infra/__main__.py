import sys

from reid_stream.infra.services import main

sys.exit(main())
