r"""The paper's experiments on SMiLER, from an argument string "LANGUAGES,ENCODER":

  python -m herberta_jax.train --config configs/smiler.py:EN,bert-base-cased --workdir runs/en_bert \
      --config.data.train_files=/data/smiler

LANGUAGES: EN, EN_S, ALL-EN, ALL-EN_S, EURO, SVO, a language (ko, de, ...), or LANG+EN (e.g. ko+en).
ENCODER: bert-base-cased, bert-base-multilingual-cased (mbert), german (bert-base-german-cased),
italian (dbmdz/bert-base-italian-cased), korean (kykim/bert-kor-base), xlm-roberta-base, xlm-roberta-large, or
any HF checkpoint directory or hub name.

`data.train_files` is a directory holding the official SMiLER TSVs (`en_corpora_train.tsv`, ...): files of every
language are prepared once and the language group picks what trains and what is tested. Hyper-parameters follow
BERT fine-tuning practice (Devlin et al., 2019: batch 32, learning rate 2e-5 to 5e-5, a few epochs), with the
paper's 2% dev split per language, stratified by relation, for early stopping.
"""

from configs import base

ENCODERS = {
    "bert-base-cased": "bert-base-cased",
    "mbert": "bert-base-multilingual-cased",
    "bert-base-multilingual-cased": "bert-base-multilingual-cased",
    "german": "bert-base-german-cased",
    "italian": "dbmdz/bert-base-italian-cased",
    "korean": "kykim/bert-kor-base",
    "xlm-roberta-base": "xlm-roberta-base",
    "xlmr": "xlm-roberta-base",
    "xlm-roberta-large": "xlm-roberta-large",
}


def get_config(arg: str = "EN,bert-base-cased"):
  languages, _, encoder = arg.partition(",")
  config = base.get_base_config()
  config.data.languages = languages
  config.data.dev_fraction = 0.02
  config.data.max_seq_len = 128
  config.model.init_from = ENCODERS.get(encoder or "bert-base-cased", encoder)
  for stage in (config.relation, config.tagger):
    stage.update(learning_rate=3e-5, batch_size=32, num_epochs=3, eval_every_steps=2000, patience=3,
                 checkpoint_every_steps=1000)
  config.data.mixture = "proportional"
  config.card.dataset_name = "SMiLER"
  return config
