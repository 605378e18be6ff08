"""The documentation holds: the configuration reference covers every key of configs/base.py and is current, the
README stays a manual, and (slow lane) every command of the README and the getting-started page runs as written."""

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNNABLE_PAGES = (REPO / "README.md", REPO / "docs" / "getting-started.md")


def _config_reference():
  spec = importlib.util.spec_from_file_location("config_reference", REPO / "docs" / "gen" / "config_reference.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_config_key_is_documented_on_the_configuration_page():
  reference = _config_reference()
  assert reference.undocumented() == [], "add a comment to these keys in configs/base.py"
  page = reference.markdown()
  leaves = [path for path, default in reference.load_defaults().items() if default is not None]
  assert len(leaves) > 50  # the whole config, stages and groups included
  for path in leaves:
    assert f"| `{path}` |" in page, path
  rows = {path: doc for path, _, doc in reference.reference()}
  assert rows["relation.learning_rate"] == rows["tagger.learning_rate"] == "AdamW's peak rate, after the warm-up"
  # A block of comments documenting several keys as "key: text" gives each key its own part.
  assert rows["infer.top_k"].startswith("the best triple is chosen among this many relations")
  assert rows["model.scratch.num_layers"].startswith("The encoder's shape and dropout")


def test_a_key_added_without_a_comment_is_reported(tmp_path):
  reference = _config_reference()
  source = (REPO / "configs" / "base.py").read_text()
  marker = "  return config\n"
  assert marker in source
  config_file = tmp_path / "base.py"
  config_file.write_text(source.replace(marker, "  config.new_knob = 3\n  config.data.also_new = 'x'\n" + marker))
  assert sorted(reference.undocumented(config_file)) == ["data.also_new", "new_knob"]
  run = subprocess.run([sys.executable, str(REPO / "docs" / "gen" / "config_reference.py"), "--check", "--config",
                        str(config_file)], capture_output=True, text=True, timeout=120)
  assert run.returncode == 1 and "config key new_knob has no comment" in run.stdout, run.stdout + run.stderr


def test_the_committed_configuration_page_is_current():
  committed = (REPO / "docs" / "configuration.md").read_text()
  assert committed == _config_reference().markdown(), (
      "docs/configuration.md is stale: run `python docs/gen/config_reference.py > docs/configuration.md` "
      "(mkdocs build does it too)")


def test_readme_is_a_manual_of_at_most_250_lines():
  lines = (REPO / "README.md").read_text().splitlines()
  assert len(lines) <= 250
  headings = [line for line in lines if line.startswith("## ")]
  assert headings == ["## Install", "## The main job", "## Results", "## From Python", "## Command-line tools",
                      "## Documentation"]
  for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
    assert (REPO / link).is_file(), link


def runnable_blocks(page: pathlib.Path) -> list[tuple[str, str]]:
  """(language, code) of every ```bash and ```python block of a page, in order (```shell blocks are for hardware
  or data the tests lack, and are not run)."""
  return re.findall(r"^```(bash|python)\n(.*?)^```", page.read_text(), re.S | re.M)


def test_the_runnable_blocks_are_found():
  readme, started = (runnable_blocks(page) for page in RUNNABLE_PAGES)
  assert [lang for lang, _ in readme] == ["bash", "bash", "python", "python"]
  assert "python -m herberta_jax.train --config configs/demo.py --workdir runs/demo" in readme[1][1]
  assert [lang for lang, _ in started] == ["bash", "bash", "bash", "python"]


def _plain_clone(destination: pathlib.Path) -> pathlib.Path:
  """The working tree's files that git tracks or would track, copied without anything git ignores (no runs/, no
  caches, no ../shared beside it): what a fresh clone of this tree holds."""
  listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                          check=True).stdout.decode().split("\0")
  for name in filter(None, listed):
    source = REPO / name
    if source.is_file():
      target = destination / name
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, target)
  return destination


@pytest.mark.slow  # installs the package into a virtual environment and trains the demo model
def test_readme_and_getting_started_commands_run_as_written(tmp_path):
  clone = _plain_clone(tmp_path / "clone" / "herberta_jax")
  # A virtual environment that sees this interpreter's packages, so that `pip install -e .` installs the clone
  # without downloading anything and without touching the interpreter the tests run in. (pip reads
  # PIP_NO_BUILD_ISOLATION=0 as --no-build-isolation: the variable sets the option's value, build_isolation.)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
  drop = ("PYTHONPATH", "XLA_FLAGS", "JAX_PLATFORMS")  # a user's shell has none of the test process's settings
  env = {k: v for k, v in os.environ.items() if k not in drop}
  env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv), PIP_NO_INDEX="1",
             PIP_NO_BUILD_ISOLATION="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  done = set()
  for page in RUNNABLE_PAGES:
    for number, (language, code) in enumerate(runnable_blocks(page), 1):
      if code in done:  # the same command again (the getting-started page repeats the README's main job)
        continue
      done.add(code)
      command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else ["python", "-c", code]
      run = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
      assert run.returncode == 0, (f"{page.name} block {number} ({language}) failed:\n{code}\n"
                                   f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
  assert (clone / "runs" / "demo" / "export" / "herberta.json").is_file()
  assert (clone / "runs" / "triples.jsonl").read_text().count("\n") == 2
  assert (clone / "runs" / "en_report" / "metrics.json").is_file()
