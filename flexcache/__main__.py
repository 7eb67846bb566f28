import sys

from flexcache.cli import main

if __name__ == "__main__":
    sys.exit(main())
