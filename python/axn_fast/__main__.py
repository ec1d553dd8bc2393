import sys

from axn_fast.cli.main import main

sys.exit(main())
