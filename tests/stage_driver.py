"""Trains the relation stage of `tiny_run.tiny_config` into WORKDIR (a path or gs:// URL) from prepared DATA_DIR,
as the train CLI does (exit 75 when preempted): `python tests/stage_driver.py WORKDIR DATA_DIR`.

For tests of a bucket workdir that should not depend on the data layer: the prepared data stays local and is only
read, so everything the run writes goes to WORKDIR or a cache.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from tiny_run import tiny_config  # noqa: E402

from herberta_jax.data import preparation  # noqa: E402
from herberta_jax.training import loop, parallel, preemption  # noqa: E402


def main(workdir: str, data_dir: str) -> int:
  config = tiny_config(num_epochs=3, checkpoint_every_steps=10)
  config.stage = "relation"
  config.log_every_steps = 20
  manifest = preparation.load_manifest(pathlib.Path(data_dir))
  try:
    loop.train_stage("relation", config, workdir, pathlib.Path(data_dir), manifest, parallel.make_mesh(-1))
  except preemption.Preempted as stop:
    print(stop, file=sys.stderr)
    return preemption.EXIT_REQUEUE
  return 0


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:]))
