"""Trained weights shipped inside the package, loaded offline as `ckpt_path=pretrained:<name>`
(resolved by `fer_lightning.checkpoint`).

Each `<name>.pt` is a slimmed checkpoint: the system's state dict (fp32, or fp16 with `--fp16` when
the weights fit and accuracy moves < 0.1 pt), its primitive hyper-parameters, the TTA mode chosen
on PublicTest and the training run's resolved config, so the normal checkpoint loader rebuilds it
with torch's `weights_only` loader and no other file. `python -m fer_lightning.pretrained` writes
them.
"""
