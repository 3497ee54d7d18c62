"""The command `vlmtl-train-vl` from a checkout: `python scripts/train_vl.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlmtl.cli.train_vl import main  # noqa: E402

if __name__ == "__main__":
    main()
