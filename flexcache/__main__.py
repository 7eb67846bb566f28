import sys

from flexcache.cli import main

sys.exit(main())
