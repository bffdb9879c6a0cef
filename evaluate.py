"""Evaluate a checkpoint: `python evaluate.py ckpt_path=... [split=val] [data.csv_path=...]`, the same
as `fer-lightning evaluate ...`."""

from fer_lightning.evaluate import main

if __name__ == "__main__":
    main()
