"""XBZRLE codec speed next to memcmp, for every SIMD path this CPU runs.

    python benchmarks/codec.py [--quick] [--size-mib N] [--repeats N] [--path NAME] [--json]

Same as ``xbzrle bench``; see xbzrle.benchmark for what is measured.
"""

import sys

from xbzrle.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
