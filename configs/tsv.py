r"""Any SMiLER-format train/test TSVs and any initial checkpoint, set by overrides:

  python -m herberta_jax.train --config configs/tsv.py --workdir runs/mine \
      --config.data.train_files=a_train.tsv,b_train.tsv --config.data.test_files=a_test.tsv \
      --config.model.init_from=/path/to/hf_checkpoint
"""

from configs import base


def get_config():
  config = base.get_base_config()
  config.model.init_from = ""  # required unless --config.data.tokenizer=wordpiece (then model.scratch is used)
  config.data.dev_fraction = 0.02
  return config
