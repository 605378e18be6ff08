"""Hyper-parameters every experiment starts from; each config file overrides what it changes.

Nothing in the library has a hidden default: every knob the training run reads lives here.
"""

import ml_collections

from herberta_jax import compile_cache


def stage_config(*, learning_rate: float, batch_size: int, num_epochs: float) -> ml_collections.ConfigDict:
  """Optimisation of one stage (relation classifier or entity tagger); they train independently."""
  return ml_collections.ConfigDict(dict(
      learning_rate=learning_rate,  # AdamW's peak rate, after the warm-up
      batch_size=batch_size,  # global: split over all devices of all hosts
      num_epochs=float(num_epochs),  # fractions allowed: --config.relation.num_epochs=0.5
      warmup_fraction=0.1,  # share of the stage's steps warming up linearly from 0; then linear decay to 0
      weight_decay=0.01,  # AdamW's decoupled weight decay; never on biases and LayerNorm
      max_grad_norm=1.0,  # gradients clipped to this global norm; 0 turns clipping off
      # Layer-wise learning-rate decay: the top encoder layer learns at layer_decay x the rate, each layer below
      # at layer_decay x the one above, the embeddings last; the heads at the full rate. 1.0: off.
      layer_decay=1.0,
      # The encoder's dropout rates in this stage; -1 keeps the checkpoint's (model.scratch's from scratch).
      # 0 turns it off and skips drawing its random bits.
      hidden_dropout=-1.0,
      attention_dropout=-1.0,
      accum_steps=1,  # micro-batches per step (gradient accumulation)
      eval_every_steps=0,  # 0: once per epoch
      patience=3,  # evaluations without dev improvement before stopping; 0 disables early stopping
      # Periodic (resumable) checkpoints, whichever comes first; 0 turns either off. Minutes are checked at
      # log boundaries only, on process 0's clock, so every host decides the same.
      checkpoint_every_steps=200,
      checkpoint_every_minutes=0.0,
  ))


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init from scratch, the dev split, the data order and the dropout keys
  config.stage = "both"  # relation | tagger | both
  config.log_every_steps = 25  # metrics fetched from the devices, logged and written to TensorBoard
  config.checkpoint_keep_latest = 2  # resumable checkpoints kept: an unreadable newest falls back to the previous
  # Dropout keys: "rbg" (XLA's RngBitGenerator for the bits, cheaper than threefry's hash on accelerators; on the
  # CPU it runs XLA's threefry algorithm: model/dropout.py), "unsafe_rbg" (its fold_in, used per
  # step, has no independence guarantee) or "threefry2x32". The masks do not depend on the device count (tested).
  # Checkpoints store the key's raw data: a resume must use the implementation it was trained with.
  config.dropout_rng_impl = "rbg"
  # XLA's persistent compilation cache: a restarted or repeated run with the same shapes skips compiling. Under the
  # home directory rather than the workdir so that new runs of the same model shapes share it; "" disables.
  config.compilation_cache_dir = compile_cache.DEFAULT_DIR
  config.export = True  # write the HuggingFace export to workdir/export at the end

  config.data = ml_collections.ConfigDict(dict(
      demo=False,  # generate the embedded demo corpus instead of reading files
      demo_seed=0,  # the demo corpus's generator seed
      demo_sentences_per_language=700,  # demo sentences generated per language, before the test split
      train_files="",  # comma-separated TSV files or directories
      test_files="",  # as train_files, for the test split evaluated at the end; "" = no test evaluation
      # A folder (or gs:// URL) that `python -m herberta_jax.prepare` wrote: the run trains on it as it is, instead
      # of preparing train_files/test_files into workdir/data. Several runs (or a pod's hosts) share one copy.
      prepared_dir="",
      languages="",  # a language group or list (EURO, SVO, ALL-EN, ko+en, ...); "" = every language found
      dev_fraction=0.02,  # carved from train per language, stratified by relation (the paper's 2%)
      max_seq_len=128,  # tokens per sentence, [CLS] and [SEP] included; longer ones are truncated and counted
      on_error="fail",  # fail | skip (rejects written to workdir/data/rejects.tsv)
      tokenizer="",  # HF tokenizer dir or hub name; "" = the init checkpoint's; "wordpiece" = train one
      wordpiece_vocab_size=8000,  # with tokenizer="wordpiece": the trained vocabulary's size
      lowercase=False,  # with tokenizer="wordpiece": lowercase the text before training and tokenizing
      mixture="proportional",  # proportional | uniform | temperature
      temperature=1.0,  # mixture=temperature: languages drawn by rows^(1/T); 1 = proportional
      bucket_boundaries=(32, 64, 128),  # padded lengths batches are bucketed to: one compiled step each
      # shards: each host reads its own share of the TFRecord shards (scales to any corpus). all: every host
      # reads the whole stream and keeps its slice of each global batch, so the batches do not depend on the
      # number of hosts (exact reproducibility across topologies; costs each host the full read).
      host_reading="shards",
      prefetch_batches=2,  # global batches read, padded and placed on the devices ahead of the train step
  ))

  config.model = ml_collections.ConfigDict(dict(
      init_from="",  # HF checkpoint dir or hub name; "" = from scratch with model.scratch
      dtype="float32",  # compute dtype (bfloat16 on GPU/TPU); parameters stay float32
      # Fused kernels for the encoder: "all" or a comma-separated subset of layer_norm (LayerNorm with its residual
      # add and dropout), bias_gelu, attention (with its dropout); "" = none. Pallas kernels on a GPU, their
      # pure-JAX references elsewhere. Dropout masks then come from a hash, not JAX's generator: same rates,
      # other draws. Off by default until a GPU run shows the step faster (docs/performance.md).
      kernels="",
      # The encoder's shape and dropout when init_from is "" (BERT's names; ignored for a pretrained init).
      scratch=dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, hidden_dropout=0.1,
                   attention_dropout=0.1, max_position_embeddings=512),
  ))

  config.relation = stage_config(learning_rate=3e-5, batch_size=32, num_epochs=3)
  # entity_loss_weight > 0 trains the relation classifier with an auxiliary head that finds the two entities
  # (multi-task); the head is dropped at export, so inference and the HuggingFace model do not change.
  config.relation.entity_loss_weight = 0.0
  config.tagger = stage_config(learning_rate=3e-5, batch_size=32, num_epochs=3)
  # init_from_relation: start the tagger from the trained relation classifier's encoder instead of
  # model.init_from (the paper trains the two independently; this makes the tagger wait for the relation stage).
  config.tagger.init_from_relation = False

  # disjoint_entities: decode the two entities as a non-overlapping pair (the paper decodes them independently).
  # ordered_entities: entity 1 must also end before entity 2 starts (data that always names them in that order).
  # top_k: the best triple is chosen among this many relations by joint probability (1: the top relation's).
  # top_m: entity pairs kept per relation (each sentence's n-best list holds top_k x top_m triples).
  # batch_size: sentences per inference batch (global, split over the devices). max_span_len: the longest
  # entity span decoded, in tokens.
  config.infer = ml_collections.ConfigDict(dict(batch_size=64, max_span_len=32, top_k=1, top_m=1,
                                                disjoint_entities=False, ordered_entities=False))
  config.mesh = ml_collections.ConfigDict(dict(num_devices=-1))  # -1: every device of every process
  # What the export's model card (its README.md, the Hub's model page) cannot infer from the run: its name, the
  # Hub id of the base model where model.init_from is a local copy (override it with init_from), and the
  # dataset's readable name and Hub id. "" = derived (workdir name, init_from when it is a Hub name, file names).
  config.card = ml_collections.ConfigDict(dict(name="", base_model="", dataset_name="", dataset_id=""))
  return config
