import sys

from factoryedge.cli import main

sys.exit(main())
