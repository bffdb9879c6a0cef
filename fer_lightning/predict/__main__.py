"""``python -m fer_lightning.predict <source> ckpt_path=<model> [overrides]``."""

import sys

from fer_lightning.predict.task import main, source_argv

if __name__ == "__main__":
    sys.argv = source_argv(sys.argv)
    main()
