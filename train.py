"""Train a facial-expression classifier: `python train.py [model=deep] [trainer.gpus=1]`, as
`fer-lightning train ...` does."""

from fer_lightning.train import main

if __name__ == "__main__":
    main()
