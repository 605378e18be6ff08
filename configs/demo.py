r"""The README's main job: both stages on the embedded demo corpus, from scratch, on a laptop CPU.

  python -m herberta_jax.train --config configs/demo.py --workdir /tmp/herberta_demo

A small BERT (4 layers, hidden 128) with a WordPiece vocabulary trained on the corpus itself, so nothing is
downloaded.
"""

from configs import base


def get_config():
  config = base.get_base_config()
  config.data.demo = True
  config.data.tokenizer = "wordpiece"
  config.data.wordpiece_vocab_size = 6000
  config.data.dev_fraction = 0.05
  config.data.bucket_boundaries = (32, 64, 128)
  config.model.scratch.update(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512)
  for stage in (config.relation, config.tagger):
    stage.learning_rate = 1e-3
    stage.batch_size = 32
    stage.num_epochs = 3
    stage.patience = 2
    stage.checkpoint_every_steps = 100
  config.tagger.num_epochs = 4
  config.log_every_steps = 20
  return config
