"""Evaluate a checkpoint: `python evaluate.py ckpt_path=... [split=val] [data.csv_path=...]`, as
`fer-lightning evaluate ...` does."""

from fer_lightning.evaluate import main

if __name__ == "__main__":
    main()
