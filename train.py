"""Train a facial-expression classifier: `python train.py [model=deep] [trainer.gpus=1]`, the same as
`fer-lightning train ...`."""

from fer_lightning.train import main

if __name__ == "__main__":
    main()
